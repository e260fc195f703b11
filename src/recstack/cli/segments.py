"""``recstack-segments {validate,run,follow} [key=value ...]`` over ``configs/segments.yaml``.

* ``validate``: parse every rule of ``rules`` (default ``configs/segments/``); print each segment's SQL predicate and
  the features it reads. A bad rule is one error line naming the file and the path of the bad node, exit 2.
* ``run``: evaluate every rule with DuckDB over the event lake as of ``as_of`` (now), write membership, history,
  runs and summary under ``out`` (recstack.profiles.segments_batch), and publish them to Redis for the API and the
  dashboard (recstack.profiles.segments_online). Prints one JSON summary line. ``engine=spark`` computes the
  membership on PySpark from the same SQL (recstack.profiles.segments_spark; ``configs/engine/``, as for
  ``recstack-data prepare``); it needs Java 17+, and says so in one line when there is none.
* ``follow``: the real-time follower (recstack.profiles.realtime) until SIGTERM/SIGINT or ``max_seconds``.

Everything after the subcommand is a Hydra override; errors are one line ``recstack-segments <cmd>: error: ...``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from recstack.cli.subcommands import split_command
from recstack.config import collect_settings, compose, config_dir, engine_node
from recstack.data.engines import EngineError, engine_from_config

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine

COMMANDS: tuple[str, ...] = ("validate", "run", "follow")
USAGE = (
    "usage: recstack-segments {validate,run,follow} [key=value ...]\n"
    "  recstack-segments validate [rules=<dir>]\n"
    "  recstack-segments run [as_of=<ISO time>] [lake=<dir>] [items_path=<file>] [out=<dir>] [publish=false]\n"
    "                        [engine=duckdb|spark]\n"
    "  recstack-segments follow [max_seconds=<s>] [consumer=<name>]"
)


def rules_dir(cfg: DictConfig) -> Path:
    return Path(cfg.rules).expanduser() if cfg.rules else config_dir() / "segments"


def as_of_ms(value: object) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"as_of={value!r} is not an ISO-8601 time (e.g. 2026-12-06T12:00:00Z)") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def horizon_h(cfg: DictConfig) -> int:
    days = cfg.horizon_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ValueError(f"horizon_days={days!r}: give whole days between 1 and 3650")
    return days * 24


def declared(cfg: DictConfig):
    from recstack.profiles.rules import load_segments

    return load_segments(rules_dir(cfg), horizon_h(cfg))


def validate(cfg: DictConfig) -> int:
    from recstack.profiles.compile import predicate_sql

    segments = declared(cfg)
    for name, segment in segments.items():
        reads = ", ".join(
            f"{f.kind}[{','.join(f.events) or '*'}|{f.category or '*'}|{f.device or '*'}|{f.window_h}h]"
            for f in segment.features
        )
        print(f"{name}: {predicate_sql(segment)}" + (f"  -- reads {reads}" if reads else ""))
    print(f"{len(segments)} segment(s) valid in {rules_dir(cfg)}", file=sys.stderr)
    return 0


def run_command(cfg: DictConfig, loaded=None, engine: SparkEngine | None = None) -> dict[str, object]:
    """One run (``loaded``: a DuckDB connection with the events already loaded, see run_segments). ``engine``: the
    caller's open engine (the profile build's), used instead of one from ``cfg.engine`` and left open; ``None``: the
    engine ``cfg`` names, started and closed here."""
    import redis

    from recstack.profiles.segments_batch import run_segments
    from recstack.profiles.segments_online import publish, registry, sync_yaml

    settings = collect_settings(cfg.collector)
    segments = declared(cfg)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
    if cfg.publish or cfg.registry:
        try:
            client.ping()
        except redis.ConnectionError as exc:
            raise ValueError(
                f"cannot reach Redis at {settings.redis_url.split('@')[-1]} ({exc}); start it, or run with "
                "publish=false registry=false to write the files only"
            ) from None
    if cfg.registry:
        sync_yaml(client, settings.names, segments)
        segments = {**registry(client, settings.names, horizon_h(cfg)), **segments}
    own = engine is None
    if own:
        engine = engine_from_config(engine_node(cfg))
    try:
        run = run_segments(
            cfg.lake,
            cfg.items_path,
            segments,
            cfg.out,
            as_of_ms=as_of_ms(cfg.as_of),
            horizon_h=horizon_h(cfg),
            gap_ms=int(cfg.session_gap_min) * 60_000,
            drop_bots=bool(cfg.drop_bots),
            threads=cfg.threads,
            memory_limit=cfg.memory_limit,
            loaded=loaded,
            engine=engine,
        )
    finally:
        if own and engine is not None:
            engine.close()
    published = publish(client, settings.names, run) if cfg.publish else {}
    client.close()
    return {
        "as_of": datetime.fromtimestamp(run.as_of_ms / 1000, UTC).isoformat(),
        "events": run.events,
        "seconds": round(run.seconds, 2),
        "sizes": {name: s["size"] for name, s in run.summary.items()},
        "left": run.left.num_rows,
        "published": bool(cfg.publish),
        "out": str(cfg.out),
        **({"tombstoned_skipped": sum(run.summary[n]["size"] - published[n] for n in published)} if published else {}),
    }


def follow_command(cfg: DictConfig) -> int:
    from recstack.profiles import realtime

    settings = collect_settings(cfg.collector)
    stats = realtime.follow(
        settings,
        segments_dir=rules_dir(cfg),
        items_path=cfg.items_path,
        group=str(cfg.group),
        consumer=cfg.consumer,
        max_seconds=None if cfg.max_seconds is None else float(cfg.max_seconds),
        horizon_h=horizon_h(cfg),
        sweep_interval_s=float(cfg.sweep_interval_s),
    )
    print(json.dumps(stats if isinstance(stats, dict) else getattr(stats, "__dict__", str(stats)), default=str))
    return 0


def run(command: str, args: Sequence[str]) -> int:
    cfg = compose("segments", list(args))
    if command == "validate":
        return validate(cfg)
    if command == "follow":
        return follow_command(cfg)
    print(json.dumps(run_command(cfg)))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    from recstack.data.schema import DataError
    from recstack.profiles.rules import RuleError

    command, rest = split_command("recstack-segments", argv, COMMANDS, USAGE)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run(command, rest)
    except (
        RuleError,
        DataError,
        EngineError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
        HydraException,
        OmegaConfBaseException,
    ) as exc:
        text = " ".join((str(exc).strip() or type(exc).__name__).split())
        print(f"recstack-segments {command}: error: {text}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
