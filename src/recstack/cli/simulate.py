"""``recstack-simulate [key=value ...]`` over ``configs/simulate.yaml``: replayed test users visit a running service,
and each arm's online CTR@k and MAP@k are printed beside its bundle's offline MAP@k (recstack.simulate).

Exit status: 0 when every arm with an offline reference agrees with it, 3 when one does not (its row says NO), 1 when
the service or the lake failed the run (one line saying what to fix), 2 for bad arguments.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from recstack.config import collect_settings, compose, prepare_from_config

PROG = "recstack-simulate"
DISAGREE_EXIT = 3


class UsageError(ValueError):
    """Arguments that cannot work: the message says what to pass instead."""


def read_key(env: str | None, file: str | None) -> str | None:
    """A key from the environment variable ``env``, else from ``file`` (its first line); None when neither is set."""
    if env and os.environ.get(env):
        return os.environ[env].strip()
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise UsageError(f"api_keys: the key file {path} does not exist")
        return path.read_text().strip().splitlines()[0].strip() or None
    return None


def settings_from_config(cfg: DictConfig):  # type: ignore[no-untyped-def]
    """The typed :class:`~recstack.simulate.run.SimulateSettings`, the API keys and the collector settings."""
    from recstack.simulate.click_model import ClickModel
    from recstack.simulate.run import SimulateSettings
    from recstack.simulate.traffic import ApiKeys, TrafficSettings

    context = cfg.context or {}
    collect = collect_settings(cfg.collector)
    try:
        traffic = TrafficSettings(
            base_url=str(cfg.service_url),
            k=int(cfg.k),
            hour=context.get("hour"),
            dow=context.get("dow"),
            concurrency=int(cfg.concurrency),
            timeout_s=float(cfg.timeout_s),
            consent=bool(cfg.consent),
            max_batch=collect.max_batch,
        )
        clicks = ClickModel(float(cfg.clicks.examination_power))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    keys_cfg = cfg.api_keys
    recommend = read_key(keys_cfg.recommend_env, keys_cfg.recommend_file)
    collect_key = read_key(keys_cfg.collect_env, keys_cfg.collect_file) or recommend
    bundles = cfg.bundles or []
    if isinstance(bundles, str):
        bundles = [bundles]
    settings = SimulateSettings(
        traffic=traffic,
        bundles=tuple(str(b) for b in bundles),
        n_users=None if cfg.n_users is None else int(cfg.n_users),
        seed=int(cfg.seed),
        clicks=clicks,
        wait_s=float(cfg.wait_s),
        confidence=float(cfg.confidence),
        bootstrap_samples=int(cfg.bootstrap_samples),
        progress=bool(cfg.progress),
        monitor_out=str(Path(str(cfg.out)) / "monitor"),
        monitor_report=bool(cfg.monitor_report),
        key_envs=(f"${keys_cfg.recommend_env}", f"${keys_cfg.collect_env}"),
    )
    return settings, ApiKeys(recommend=recommend, collect=collect_key), collect


def _finite(value: object) -> object:
    """JSON-safe: NaN becomes null (nested dicts, lists and tuples)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def load_split(cfg: DictConfig):  # type: ignore[no-untyped-def]
    from recstack.data.prepared import PreparedSplit

    if cfg.split_path:
        return PreparedSplit.load(Path(str(cfg.split_path)).expanduser())
    return prepare_from_config(cfg, progress=bool(cfg.progress))


def run(cfg: DictConfig) -> int:
    """Everything ``recstack-simulate`` does, from a composed config; returns the exit status."""
    from recstack.simulate.compare import format_ab, format_arms
    from recstack.simulate.run import simulate

    settings, keys, collect = settings_from_config(cfg)
    split = load_split(cfg)
    print(f"{PROG}: {split!r} -> {settings.traffic.base_url}", flush=True)
    result = simulate(split, settings, collect, keys)
    k = settings.traffic.k
    print(
        f"  {len(result.visits):,} users visited in {result.seconds:.1f} s (until stored: {result.lake_impressions:,} "
        f"impressions in the lake {collect.lake}); online figures: the monitor over the lake ({settings.monitor_out})",
        flush=True,
    )
    print(format_arms(result.arms, k, settings.confidence, result.n_test_users))
    if verdicts := format_ab(result.ab, result.experiment):
        print(verdicts)
    if not result.records_agree:
        print(
            "  warning: the lake's judgement differs from the simulator's own records (events lost, duplicated or "
            "attributed elsewhere); see the consumer's log",
            flush=True,
        )
    if result.not_personalised:
        print(
            f"  warning: {result.not_personalised} answer(s) were not personalised from a trained vector (consent "
            "missing, erased users, or users the bundle does not know): they cannot match the offline figure",
            flush=True,
        )
    out = Path(str(cfg.out)) / "simulation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "k": k,
        "users": len(result.visits),
        "experiment": result.experiment,
        "seconds": round(result.seconds, 2),
        "records_agree": result.records_agree,
        "monitor_report": result.monitor_report,
        "arms": [a.as_dict() for a in result.arms],
        "ab": result.ab.to_dict("records"),
    }
    out.write_text(json.dumps(_finite(body), indent=2) + "\n")
    print(f"  results: {out}")
    return DISAGREE_EXIT if any(a.agrees is False for a in result.arms) else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(__doc__)
        sys.exit(0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from recstack.simulate.traffic import SimulationError

    try:
        cfg = compose("simulate", args)
        OmegaConf.resolve(cfg)
        sys.exit(run(cfg))
    except (HydraException, OmegaConfBaseException, ValidationError, UsageError) as error:
        print(f"{PROG}: error: {str(error).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except (SimulationError, FileNotFoundError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
