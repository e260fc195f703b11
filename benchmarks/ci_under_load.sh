#!/usr/bin/env bash
# `make test` N times in a row on a fresh clone of HEAD while stress-ng keeps every core busy.
#
#   bash benchmarks/ci_under_load.sh            # 5 runs, stress-ng --cpu $(nproc)
#   RUNS=2 bash benchmarks/ci_under_load.sh
#
# The clone installs its own .venv first (on an idle machine), then the stress starts and the runs follow. Each run's
# log and a summary (result, wall time, pytest's closing line, load average) go to $OUT (default benchmarks/out/).
# Needs stress-ng (Debian: apt-get install stress-ng), the shared data and Redis, as .ci/run does.
set -euo pipefail
runs=${RUNS:-5}
repo=$(git rev-parse --show-toplevel)
out=${OUT:-$repo/benchmarks/out/ci_under_load}
work=$(mktemp -d)
stress=
# On any exit (a failed clone or install, Ctrl-C, the end): stop the stress and remove the clone; the logs stay in $out.
cleanup() {
  if [ -n "$stress" ]; then
    kill "$stress" 2>/dev/null || true
    wait "$stress" 2>/dev/null || true
  fi
  cd /
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$out"
export RECSTACK_DATA_HOME="${RECSTACK_DATA_HOME:-$(cd "$repo/.." && pwd)/shared/data}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

command -v stress-ng >/dev/null || { echo "stress-ng is not installed (apt-get install stress-ng)" >&2; exit 2; }
git clone -q "$repo" "$work/recstack"
cd "$work/recstack"
echo "clone of $(git rev-parse --short HEAD) in $work/recstack; installing .venv (not timed)"
make install >"$out/install.log" 2>&1 || { echo "make install failed: see $out/install.log" >&2; exit 2; }

stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
stress=$!
summary="$out/summary.txt"
echo "# make test under stress-ng --cpu $(nproc), commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ)" >"$summary"
failed=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if make test >"$out/run-$i.log" 2>&1; then result=pass; else result=FAIL; failed=$((failed + 1)); fi
  took=$(($(date +%s) - start))
  closing=$(grep -E '^=+ .*(passed|failed).* in ' "$out/run-$i.log" | tail -n 1 || true)
  line="run $i: $result in ${took} s, load $(cut -d' ' -f1-3 /proc/loadavg): $closing"
  echo "$line" | tee -a "$summary"
done
echo "$((runs - failed))/$runs green" | tee -a "$summary"
[ "$failed" -eq 0 ]
