"""``recstack-retrain [data=lake data.source.window_days=90 holdout.days=7] [service_url=http://...]``: one retrain
run (:func:`recstack.retrain.cycle.run_cycle`, ``configs/retrain.yaml``) for a scheduler.

stdout carries one JSON line, the run's summary (the full record is ``<out>/<run>/decision.json``); logs go to stderr.
The exit status says how it ended (:class:`recstack.retrain.outcome.ExitCode`): 0 deployed, 99 gate refused (the
serving bundle stays), 10 the serving bundle had seen the whole hold-out, 2 bad settings, 3 data, 4 training,
5 evaluation, 6 export, 7 registry / model store, 8 reload; 1 is a bug (with its traceback).
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir


def retrain(cfg: DictConfig) -> int:
    """Run one retrain with a composed ``configs/retrain.yaml``, print its summary; returns the exit status."""
    from recstack.retrain.cycle import run_cycle

    result = run_cycle(cfg)
    summary = {
        "run": result.name,
        "decision": result.decision,
        "exit": int(result.code),
        "bundle": result.bundle,
        "model_tag": result.model_tag,
        "serving": result.serving,
        "serving_source": result.serving_source,
        "gate": None if result.gate is None else result.gate["reason"],
        "seconds": {s["step"]: s["seconds"] for s in result.steps},
    }
    print(json.dumps(summary), flush=True)
    if result.code:
        print(f"recstack-retrain: {result.message}", file=sys.stderr)
    return int(result.code)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="retrain")
def main(cfg: DictConfig) -> None:
    status = retrain(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
