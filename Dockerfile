# recstack serving image: python:3.11-slim, the [serve] extra only (no torch), non-root, with a healthcheck.
# Consistent with serving/bentofile.yaml (same Python, same packages). Settings: configs/serve.yaml (workers, tracing,
# timeouts ...), overridden by the arguments after the image name; RECSTACK_REDIS_URL is read by serve.yaml itself.
#
#   docker build -t recstack-serve .                                   # bundle mounted at run time:
#   docker run -p 3000:3000 -v $PWD/data/bundles/ml100k-mf:/bundle:ro -e RECSTACK_REDIS_URL=redis://host:6379/0 recstack-serve
#   docker run ... recstack-serve workers=4 tracing=true          # arguments are configs/serve.yaml overrides
#   docker build -t recstack-serve:ml100k --target baked --build-context bundle=data/bundles/ml100k-mf .   # baked in
#
# Redis is optional at run time: without it the service answers from the bundle alone and /readyz says "degraded".

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_DO_NOT_TRACK=True \
    BENTOML_HOME=/home/recstack/bentoml \
    RECSTACK_CONFIG_DIR=/app/configs \
    RECSTACK_REDIS_URL=redis://redis:6379/0 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/recstack-*.whl)[serve]" && rm -rf /wheels \
    && useradd --create-home --uid 10001 recstack
WORKDIR /app
COPY configs/serve.yaml ./configs/serve.yaml
COPY serving/__init__.py serving/service.py ./serving/
USER recstack
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2).status != 200)"
# Exec form: recstack-serve is PID 1. It supervises `bentoml serve` (its child): SIGTERM from `docker stop` stops the
# whole tree within stop_timeout_s, and it reaps orphans. `docker run <image> workers=4` appends overrides (CMD).
ENTRYPOINT ["recstack-serve", "bundle=/bundle", "host=0.0.0.0", "port=3000"]
CMD []

# --target baked: the bundle copied in from the named build context `bundle`.
FROM runtime AS baked
COPY --from=bundle --chown=recstack . /bundle

# Default target (last stage): the bundle is mounted at /bundle.
FROM runtime AS serve
