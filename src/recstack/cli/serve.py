"""``recstack-serve bundle=<tag-or-path> [port=3000 host=127.0.0.1 redis_url=... workers=2]``.

A thin Hydra app over ``configs/serve.yaml``: it turns the config into ``RECSTACK_*`` environment variables and
replaces itself with ``bentoml serve serving.service:Recommender`` (exec, so SIGTERM reaches BentoML directly and a
container's PID 1 is the server).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir

SERVICE = "serving.service:Recommender"

# configs/serve.yaml key -> environment variable read by serving/service.py
ENV_KEYS = {
    "bundle": "RECSTACK_BUNDLE",
    "workers": "RECSTACK_WORKERS",
    "redis_url": "RECSTACK_REDIS_URL",
    "redis_prefix": "RECSTACK_REDIS_PREFIX",
    "redis_timeout_s": "RECSTACK_REDIS_TIMEOUT_S",
    "recent_max": "RECSTACK_RECENT_MAX",
    "recent_ttl_s": "RECSTACK_RECENT_TTL_S",
    "n_candidates": "RECSTACK_N_CANDIDATES",
    "ef_search": "RECSTACK_EF_SEARCH",
    "max_body_bytes": "RECSTACK_MAX_BODY_BYTES",
    "request_timeout_s": "RECSTACK_REQUEST_TIMEOUT_S",
}


def project_root() -> Path:
    """The folder holding ``serving/service.py`` (the repository root, or the image's working directory)."""
    for candidate in (Path.cwd(), config_dir().parent):
        if (candidate / "serving" / "service.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"serving/service.py not found in {Path.cwd()} or {config_dir().parent}; run recstack-serve from the "
        "repository root (or the image's /app)"
    )


def serve_command(cfg: DictConfig, base_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` argv and environment for a composed serve config (pure, so tests can check it)."""
    env = dict(os.environ if base_env is None else base_env)
    bundle = str(cfg.bundle)
    # A relative bundle path is relative to where the user typed the command, not to BentoML's working dir.
    if Path(bundle).exists():
        bundle = str(Path(bundle).resolve())
    for key, var in ENV_KEYS.items():
        env[var] = bundle if key == "bundle" else str(cfg[key])
    env["RECSTACK_ACCESS_LOG"] = "1" if cfg.access_log else "0"
    # One request is one small search and one small ORT call: threads inside them only contend with the other
    # workers for the same cores. BentoML's usage-tracking thread is off too.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    env["RECSTACK_TRACING"] = "1" if cfg.get("tracing", False) else "0"
    if cfg.get("bentoml_config"):
        env["BENTOML_CONFIG"] = str(Path(str(cfg.bentoml_config)).resolve())
    root = project_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    bentoml = Path(sys.executable).with_name("bentoml")
    argv = [str(bentoml) if bentoml.exists() else "bentoml", "serve", SERVICE]
    argv += ["--working-dir", str(root), "--host", str(cfg.host), "--port", str(cfg.port)]
    return argv, env


@hydra.main(config_path=str(config_dir()), config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    argv, env = serve_command(cfg)
    print(f"recstack-serve: {' '.join(argv)} (bundle {env['RECSTACK_BUNDLE']})", flush=True)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
