"""``recstack-profiles {build,check} [key=value ...]`` over ``configs/profiles.yaml``.

* ``build``: load the lake's events (recstack.profiles.source), compute one profile per user
  (recstack.profiles.build), run the data-quality checks on them (recstack.profiles.quality: imputation, anomalies,
  duplicate merges), then write ``<out>/profiles.parquet``, ``anomalies.parquet`` and ``quality.json`` and load the
  profiles into Redis (``redis.load``).
  With ``segments.run=true`` the build also runs the segment rules (``recstack-segments run``) over the events it
  loaded, so the two jobs read the lake once. ``engine=spark`` computes the profiles on PySpark from the same SQL
  (recstack.profiles.profiles_spark; ``configs/engine/``, as for ``recstack-data prepare``): the load and the checks
  stay on DuckDB. It needs Java 17+, and says so in one line when there is none.
* ``check``: the same pass without writing profiles or touching Redis: ``anomalies.parquet``, ``quality.json`` and
  the duplicate merges (aliases rows in the lake).

Progress is one INFO line per step on stderr; the summary goes to stdout. Errors print one
``recstack-profiles <command>: error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from recstack.cli.subcommands import split_command
from recstack.config import collect_settings, compose, engine_node
from recstack.data.engines import EngineError, engine_from_config

COMMANDS: tuple[str, ...] = ("build", "check")
USAGE = (
    "usage: recstack-profiles {build,check} [key=value ...]\n"
    "  recstack-profiles build [as_of=<ISO time>] [out=<dir>] [lake=<dir>] [items_path=<csv>] [redis.load=false]\n"
    "                         [segments.run=true] [segments.overrides=[rules=<dir>,out=<dir>]] [engine=duckdb|spark]\n"
    "  recstack-profiles check [as_of=<ISO time>] [out=<dir>] [impute.age_band=mode|median|model|none]\n"
    "  settings and their defaults: configs/profiles.yaml"
)
log = logging.getLogger("recstack.profiles")


def as_of_ms(value: object) -> int:
    """``as_of`` (ISO time, UTC unless it says otherwise; None: now) in epoch milliseconds."""
    if value is None:
        return int(time.time() * 1000)
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"as_of={value!r}: give an ISO time such as 2026-12-06T12:00:00Z, or null for now") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def specs(cfg: DictConfig) -> tuple[Any, Any]:
    """``(ProfileSpec, QualitySpec)`` of the config: every setting checked before any work."""
    from recstack.profiles.build import ProfileSpec
    from recstack.profiles.quality import QualitySpec
    from recstack.profiles.quality_anomalies import AnomalySpec
    from recstack.profiles.quality_impute import ModelSettings

    gap = cfg.session_gap_min
    if isinstance(gap, bool) or not isinstance(gap, int | float) or gap <= 0:
        raise ValueError(f"session_gap_min={gap!r}: give a positive number of minutes")
    profile = ProfileSpec(
        session_gap_ms=round(float(gap) * 60_000),
        half_life_days=cfg.half_life_days,
        weights=dict(_plain(cfg.weights) or {}),
        top_k=cfg.top_k,
    )
    try:
        model = ModelSettings(**_plain(cfg.model))
        anomalies = AnomalySpec(**_plain(cfg.anomalies))
    except TypeError as exc:  # an unknown key
        raise ValueError(f"model / anomalies: {exc}; the keys are in configs/profiles.yaml") from None
    quality = QualitySpec(
        impute=dict(_plain(cfg.impute) or {}),
        model=model,
        anomalies=anomalies,
        merge_duplicates=bool(cfg.merge_duplicates),
    )
    return profile, quality


class Steps:
    """One INFO line as each step starts and as it ends (with its time): the progress of a long run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        self.done += 1
        log.info("[%d/%d] %s ...", self.done, self.total, name)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 3)
        log.info("[%d/%d] %s: %.1f s", self.done, self.total, name, self.timings[name])
        return out


def _connect(cfg: DictConfig):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    if cfg.memory_limit:
        con.execute(f"SET memory_limit = '{str(cfg.memory_limit).replace(chr(39), '')}'")
    return con


def run_profiles(cfg: DictConfig, write_profiles: bool) -> dict[str, Any]:
    """The whole pass (module docstring); returns the summary."""
    import pyarrow.parquet as pq

    from recstack.data.schema import DataError
    from recstack.profiles.build import build_profiles
    from recstack.profiles.profile_surveys import load_survey_answers
    from recstack.profiles.quality import run_checks
    from recstack.profiles.source import load_attributes, load_catalogue, load_events

    profile_spec, quality_spec = specs(cfg)
    lake = Path(str(cfg.lake)).expanduser()
    if not lake.is_dir():
        raise DataError(
            f"no event lake at {lake}: the folder does not exist; point lake= (or $RECSTACK_LAKE) at the collector's "
            "lake folder (configs/collector/default.yaml: lake)"
        )
    as_of = as_of_ms(cfg.as_of)
    if cfg.history_days is None:
        start = 0
    else:
        if isinstance(cfg.history_days, bool) or not isinstance(cfg.history_days, int) or cfg.history_days < 1:
            raise ValueError(f"history_days={cfg.history_days!r}: give whole days >= 1, or null for the whole lake")
        start = as_of - int(timedelta(days=cfg.history_days).total_seconds() * 1000)
    redis_load = write_profiles and bool(cfg.redis.load)
    settings = collect_settings(cfg.collector) if redis_load else None
    out = Path(str(cfg.out)).expanduser()
    with_segments = write_profiles and bool(cfg.segments.run)
    seg_cfg = _segments_config(cfg, as_of) if with_segments else None
    segments: dict[str, Any] | None = None
    steps = Steps(4 + int(write_profiles) + int(redis_load) + int(with_segments))
    with ExitStack() as stack:
        # check computes no profiles: nothing for Spark to do
        engine = engine_from_config(engine_node(cfg) if write_profiles else None)
        if engine is not None:
            stack.callback(engine.close)
        # Spark (and its Java check) starts before the lake is read: a missing Java is one line in seconds, not after
        # the load
        spark = engine.spark if engine is not None else None
        con = _connect(cfg)
        stack.callback(con.close)  # closed before the engine

        def load() -> int:
            n = load_events(con, lake, start, as_of + 1, drop_bots=bool(cfg.drop_bots))
            load_catalogue(con, cfg.items_path)
            load_attributes(con, lake, as_of, drop_bots=bool(cfg.drop_bots))
            load_survey_answers(con, lake)
            return n

        n_events = steps.run("load events", load)
        if spark is None:
            profiles = steps.run("profiles", build_profiles, con, as_of, profile_spec)
        else:
            from recstack.profiles.profiles_spark import spark_profiles

            profiles = steps.run("profiles (Spark)", spark_profiles, spark, con, as_of, profile_spec)
        profiles, anomalies, report = steps.run("quality checks", run_checks, con, profiles, as_of, lake, quality_spec)
        if with_segments:
            label = "segments" if spark is None else "segments (Spark)"
            segments = steps.run(label, _segments, seg_cfg, con, start, as_of, engine)

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(anomalies, out / "anomalies.parquet", compression="zstd")
        (out / "quality.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")

    steps.run("write anomalies.parquet, quality.json", write)
    if write_profiles:
        steps.run("write profiles.parquet", _write_parquet, profiles, out / "profiles.parquet")
    loaded = 0
    if redis_load:
        loaded = steps.run("load Redis", _load_redis, settings, profiles, cfg.redis)
    return {
        "command": "build" if write_profiles else "check",
        "as_of": datetime.fromtimestamp(as_of / 1000, UTC).isoformat(),
        "events": n_events,
        "users": profiles.num_rows,
        "out": str(out),
        "redis_profiles": loaded,
        "quality": report.as_dict(),
        "seconds": steps.timings,
        **({"segments": segments} if segments is not None else {}),
    }


def _segments_config(cfg: DictConfig, as_of: int) -> DictConfig:
    """The ``recstack-segments run`` config of ``segments.run``: configs/segments.yaml with ``segments.overrides``
    and the build's own lake and time settings (the build's engine is passed to the run itself); checked (rules parsed) before any work."""
    from recstack.cli.segments import declared

    overrides = [str(o) for o in (_plain(cfg.segments.overrides) or [])]
    mine = {
        "lake": str(cfg.lake),
        "items_path": "null" if cfg.items_path is None else str(cfg.items_path),
        "as_of": datetime.fromtimestamp(as_of / 1000, UTC).isoformat(),
        "drop_bots": str(bool(cfg.drop_bots)).lower(),
        "session_gap_min": str(cfg.session_gap_min),
        "threads": "null" if cfg.threads is None else str(cfg.threads),
        "memory_limit": "null" if cfg.memory_limit is None else str(cfg.memory_limit),
    }
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in mine:
            raise ValueError(f"segments.overrides: {key} is the build's own setting; set {key}= on the build instead")
    seg_cfg = compose("segments", [*overrides, *(f"{k}={v}" for k, v in mine.items())])
    with open_dict(seg_cfg):
        seg_cfg.collector = cfg.collector  # the same Redis, stream names and lake as the build
    declared(seg_cfg)  # a bad rule fails now, not after the profiles
    return seg_cfg


def _segments(seg_cfg: DictConfig, con, start_ms: int, as_of: int, engine) -> dict[str, Any]:
    """``recstack-segments run`` over the events ``con`` holds when they reach back to the segment horizon's start
    (minus a session gap); else over its own load, with a warning saying why. On the build's engine (``engine``:
    its open SparkEngine, or ``None`` for DuckDB), which the build closes."""
    from recstack.cli.segments import horizon_h, run_command
    from recstack.profiles.compile import window_start_bucket
    from recstack.profiles.rules import HOUR_MS

    needed = window_start_bucket(as_of, horizon_h(seg_cfg)) * HOUR_MS - int(seg_cfg.session_gap_min) * 60_000
    if start_ms > needed:
        log.warning("history_days is shorter than the segments' horizon_days: the segments load their own events")
        return run_command(seg_cfg, engine=engine)
    return run_command(seg_cfg, loaded=con, engine=engine)


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, compression="zstd")
    os.replace(temp, path)  # readers never see half a file


def _load_redis(settings, profiles, redis_cfg: DictConfig) -> int:
    import redis

    from recstack.profiles.online import load_profiles

    ttl = redis_cfg.ttl_days
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ValueError(f"redis.ttl_days={ttl!r}: give a positive number of days, or null for no expiry")
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        return load_profiles(
            client,
            settings.names,
            profiles,
            None if ttl is None else int(float(ttl) * 86_400),
            chunk=int(redis_cfg.chunk),
        )
    except redis.ConnectionError as exc:
        raise ValueError(
            f"cannot reach Redis at {settings.redis_url.split('@')[-1]} ({exc}); start it, set collector.redis_url, "
            "or build without the online copy: redis.load=false"
        ) from None
    finally:
        client.close()


def summary_lines(summary: dict[str, Any]) -> list[str]:
    q = summary["quality"]
    imputed = ", ".join(
        f"{column} {i['imputed']}/{i['missing']} by {i['used']}"
        + (f" (accuracy {i['accuracy']:.3f} vs baseline {i['baseline']:.3f})" if "accuracy" in i else "")
        for column, i in q["imputation"].items()
    )
    anomalies = ", ".join(f"{kind} {n}" for kind, n in q["anomalies"].items())
    lines = [
        f"recstack-profiles {summary['command']} as of {summary['as_of']}: {summary['users']:,} users from "
        f"{summary['events']:,} events in {sum(summary['seconds'].values()):.1f} s",
        f"  imputed: {imputed or 'nothing declared'}",
        f"  anomalies: {anomalies}",
        f"  duplicates: {q['duplicates']['found']} found, {q['duplicates']['merged']} merged (from the next build)",
        f"  written: {summary['out']}"
        + (f"; Redis: {summary['redis_profiles']:,} profiles" if summary["redis_profiles"] else ""),
    ]
    if "segments" in summary:
        seg = summary["segments"]
        lines.append(
            f"  segments: {len(seg['sizes'])} evaluated over {seg['events']:,} events, {sum(seg['sizes'].values()):,} "
            f"memberships, written: {seg['out']}" + ("; published to Redis" if seg["published"] else "")
        )
    return lines


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def run(command: str, args: Sequence[str]) -> dict[str, Any]:
    import duckdb

    cfg = compose("profiles", list(args))
    try:
        return run_profiles(cfg, write_profiles=command == "build")
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        raise ValueError(
            f"the lake could not be read ({_message(exc)}); a damaged or foreign file under events/ or aliases/? "
            "Move it out of the lake and run again"
        ) from None


def main(argv: Sequence[str] | None = None) -> None:
    command, rest = split_command("recstack-profiles", argv, COMMANDS, USAGE)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run(command, rest)
    except (EngineError, ValueError, TypeError, KeyError, OSError, HydraException, OmegaConfBaseException) as exc:
        print(f"recstack-profiles {command}: error: {_message(exc)}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary_lines(summary)))
    sys.exit(0)


if __name__ == "__main__":
    main()
