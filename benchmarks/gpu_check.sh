#!/usr/bin/env bash
# One-shot check on a machine with NVIDIA GPUs: MF and LightGCN on ML-100K with trainer=gpu (one GPU), then with
# trainer=ddp on 2 GPUs when there are at least two; prints each run's epoch times and test NDCG@10.
#
#   bash benchmarks/gpu_check.sh                      # configs' defaults: epochs by early stopping
#   EPOCHS=5 SEEDS="0 1" bash benchmarks/gpu_check.sh # fewer epochs (a short lease), more seeds
#
# Needs a CUDA build of torch in .venv (README, "GPU users": make install TORCH_INDEX=https://download.pytorch.org/whl/cu126)
# and ML-100K under $RECSTACK_DATA_HOME (default: shared/data or ../shared/data next to the repository, else data/raw).
# Never run by the tests. Under DDP fit.batch_size is per process: each rank takes half the configured batch, so the
# global batch and the steps per epoch are those of the one-GPU run (as benchmarks/ddp_ml100k.py does on the CPU).
# Epoch times come from benchmarks/epoch_clock.py (training loop and validation apart, rank 0); run folders, logs
# and a summary go to $OUT (default benchmarks/out/gpu_check/<time>/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PY:-$repo/.venv/bin/python}
out=${OUT:-$repo/benchmarks/out/gpu_check/$(date -u +%Y%m%d-%H%M%S)}
seeds=${SEEDS:-0}
epochs=${EPOCHS:-}

if [ -z "${RECSTACK_DATA_HOME:-}" ]; then
  for candidate in "$repo/shared/data" "$repo/../shared/data" "$repo/data/raw"; do
    if [ -d "$candidate/ml-100k" ]; then RECSTACK_DATA_HOME=$(cd "$candidate" && pwd); break; fi
  done
fi
export RECSTACK_DATA_HOME=${RECSTACK_DATA_HOME:-$repo/data/raw}
[ -d "$RECSTACK_DATA_HOME/ml-100k" ] || { echo "ML-100K not found under RECSTACK_DATA_HOME=$RECSTACK_DATA_HOME" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this check needs NVIDIA GPUs" >&2; exit 2; }
gpus=$(nvidia-smi -L | wc -l)
"$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
  echo "torch in $py cannot see a GPU (a CPU build?): reinstall with TORCH_INDEX=https://download.pytorch.org/whl/cu126" >&2
  exit 2
}
mkdir -p "$out"
export PYTHONPATH="$repo/benchmarks${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "GPUs: $gpus ($(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^ *//' | paste -sd ';'))"
echo "torch $("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'); data $RECSTACK_DATA_HOME; out $out"

# train <name> <overrides...>: one recstack-train process; its log, run folder and epoch clock under $out.
train() {
  local name=$1; shift
  local run="$out/$name"
  local extra=()
  [ -n "$epochs" ] && extra+=("fit.max_epochs=$epochs")
  echo "== $name: recstack-train $*"
  local start=$SECONDS
  if ! (cd "$repo" && "$py" -m recstack.cli.train "$@" "${extra[@]}" progress=false "run_dir=$run" \
      "hydra.run.dir=$run-hydra" "+callbacks.epoch_clock._target_=epoch_clock.EpochClock" \
      "+callbacks.epoch_clock.path=$run-epochs.json" >"$run.log" 2>&1); then
    echo "   FAILED after $((SECONDS - start)) s; the last lines of $run.log:" >&2
    tail -n 30 "$run.log" >&2
    return 1
  fi
  "$py" - "$run" "$((SECONDS - start))" <<'EOF'
import json, statistics, sys
run, wall = sys.argv[1], sys.argv[2]
m = json.load(open(f"{run}/metrics.json"))
clock = json.load(open(f"{run}-epochs.json"))["epochs"]
train = [e["train_s"] for e in clock]
val = [e["validation_s"] for e in clock]
print(f"   epochs {m['epochs']} (best {m['best_epoch']}); epoch train loop median {statistics.median(train):.3f} s "
      f"(first {train[0]:.3f} s), validation median {statistics.median(val):.3f} s; fit {m['train_seconds']:.1f} s; "
      f"process {wall} s; test ndcg@10 {m['test']['ndcg@10']:.4f}")
print("   epoch train s: " + " ".join(f"{t:.3f}" for t in train))
EOF
}

# The configured per-process batch of a model, halved for 2 DDP ranks.
half_batch() { (cd "$repo" && "$py" -c "from recstack.config import compose; print(int(compose('train', ['model=$1']).fit.batch_size) // 2)"); }

status=0
for seed in $seeds; do
  for model in mf lightgcn; do
    train "$model-gpu-s$seed" "model=$model" "seed=$seed" trainer=gpu || status=1
    if [ "$gpus" -ge 2 ]; then
      train "$model-ddp2-s$seed" "model=$model" "seed=$seed" trainer=ddp trainer.devices=2 \
        "fit.batch_size=$(half_batch "$model")" || status=1
    else
      echo "== $model-ddp2-s$seed: skipped (one GPU)"
    fi
  done
done
echo "logs and run folders: $out"
exit $status
