#!/usr/bin/env bash
# Re-measure the ranker and serving figures the README quotes, in one go, on a quiet machine (nothing else running:
# every throughput figure here moves with the load). Run from anywhere; it works in the repository root.
#
#   bash benchmarks/rerun_all.sh                  # ranker (3 repeats), serve_load (3 repeats, c=1 and c=16), soak 10 min
#   WITH_MODELS=1 bash benchmarks/rerun_all.sh    # also the ML-100K per-seed runs and the --budget runs
#
# Needs: `make install`, wrk and redis-server (Debian packages), the MovieLens data under RECSTACK_DATA_HOME (default
# ../shared/data), and the demo's bundle and Wide & Deep run (outputs/demo; `make demo` runs first when missing;
# offline, export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 first, as .ci/run does).
# Writes the results JSONs to benchmarks/results/ (commit them with the RESULTS.md update) and the full logs to
# benchmarks/out/rerun-<time>/ (not committed). Approximate times on the 2-core machine: demo 5-10 min if missing;
# ranker ~2 min; serve_load ~30 min; soak ~11.5 min; with models ~25 min more.
set -euo pipefail
cd "$(dirname "$0")/.."

export RECSTACK_DATA_HOME="${RECSTACK_DATA_HOME:-../shared/data}"
PY=.venv/bin/python
stamp=$(date -u +%Y%m%d-%H%M%S)
logs=benchmarks/out/rerun-$stamp
mkdir -p "$logs" benchmarks/results

step() {  # step NAME COMMAND...: run it, log it, say how long it took
    local name=$1
    shift
    echo "== $name: $* (1-min load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%H:%M:%S) UTC)"
    local start=$SECONDS
    "$@" 2>&1 | tee "$logs/$name.log"
    echo "== $name took $((SECONDS - start)) s" | tee -a "$logs/times.txt"
}

load=$(cut -d' ' -f1 /proc/loadavg)
if awk "BEGIN {exit !($load > 1.0)}"; then
    echo "warning: 1-min load average is $load; throughput figures need a quiet machine" >&2
fi

if [ ! -f outputs/demo/bundle/manifest.json ] || [ ! -d outputs/demo/runs/wide_deep ]; then
    step demo make demo
fi

step onnx_ranker nice "$PY" benchmarks/onnx_ranker.py --run outputs/demo/runs/wide_deep --repeats 3
step serve_load "$PY" benchmarks/serve_load.py --bundle outputs/demo/bundle --duration 30 --repeats 3
step soak "$PY" benchmarks/soak.py --bundle outputs/demo/bundle --minutes 10

if [ "${WITH_MODELS:-0}" = 1 ]; then
    step ml100k nice "$PY" benchmarks/ml100k.py --models mf lightgcn wide_deep pop itemknn userknn --seeds 0 1 2 \
        --overrides torch_threads=1
    step ml100k_budget nice "$PY" benchmarks/ml100k.py --models mf lightgcn --seeds 0 1 2 \
        --overrides torch_threads=1 --budget
fi

echo "logs in $logs; results:"
ls -1t benchmarks/results | head -10
