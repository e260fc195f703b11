"""``recstack-data prepare|stats [data=ml100k] [split=random] [hydra overrides]`` and
``recstack-data ingest-logs path=<access.log[.gz]> rules=<yaml> [format=combined|common|json] [lake=<dir>]``.

* ``prepare``: clean, index and split into ``<processed_root>/<dataset>/<config-hash>/`` (reused when it exists;
  ``force=true`` rebuilds), then print where it is. ``engine=spark`` does the per-row work on PySpark (same split,
  same folder); with it ``processed_root`` may also be an object-storage URI (``s3a://``, ``gs://``), written by Spark.
* ``stats``: the same preparation if needed, then statistics of the split computed in SQL (DuckDB).
* ``ingest-logs``: a web-server access log into the event lake (recstack.collect.log_import), minimised like the
  collector's events; the collector settings (lake, pseudonymisation key, ip_mode) come from
  ``configs/collector/default.yaml``, ``lake=`` and ``collector.<key>=<value>`` override them. Prints what happened
  to every line (events, skipped by reason, malformed line numbers, files, lines/s).

The subcommand is the first word; for prepare and stats everything after it goes to a Hydra app over
``configs/prepare.yaml``. Errors in the data or the config print one ``recstack-data <command>: error: ...`` line and
exit with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from recstack.cli.subcommands import split_command
from recstack.config import config_dir, engine_node
from recstack.data.engines import EngineError, engine_from_config, is_uri

if TYPE_CHECKING:
    from recstack.collect.settings import CollectSettings

COMMANDS: tuple[str, ...] = ("prepare", "stats", "ingest-logs")
USAGE = (
    "usage: recstack-data {prepare,stats} [data=<name>] [split=random|chrono|loo|time] [engine=duckdb|spark]\n"
    "                                     [key=value ...]\n"
    "       recstack-data ingest-logs path=<access.log[.gz]> rules=<rules.yaml> [format=combined|common|json]\n"
    "                                 [lake=<dir>] [collector.<key>=<value> ...]\n"
    "  e.g. recstack-data prepare data=ml100k split=chrono data.clean.min_user_interactions=5\n"
    "       recstack-data stats data=events data.source.path=events.csv\n"
    "       recstack-data ingest-logs path=data/examples/access.log rules=configs/log_rules/demo.yaml"
)
INGEST_KEYS: tuple[str, ...] = ("path", "rules", "format", "lake")
_CLEAR_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, OmegaConfBaseException, EngineError)


def run(command: str, cfg: DictConfig) -> str:
    """Do ``command`` for a composed prepare config and return what to print (testable without the CLI)."""

    from recstack.config import split_spec
    from recstack.data.build_split import DEFAULT_ROOT, prepare
    from recstack.data.warehouse import format_stats, stats

    engine = engine_from_config(engine_node(cfg))
    root = str(cfg.get("processed_root") or DEFAULT_ROOT)
    force = bool(cfg.get("force", False))
    try:
        if is_uri(root):
            if engine is None:
                raise ValueError(f"processed_root={root} is a URI: only engine=spark writes there; add engine=spark")
            if command == "stats":
                raise ValueError("stats reads a split on local disk; use a local processed_root for it")
            folder, manifest = engine.prepare_at(split_spec(cfg), root, force=force)
            return f"prepared {manifest['dataset']} {manifest['config_hash']} {manifest['counts']}\n{folder}"
        split = prepare(split_spec(cfg), out_root=root, force=force, engine=engine)
    finally:
        if engine is not None:
            engine.close()
    if command == "stats":
        return format_stats(stats(split.root))
    return f"{split!r}\n{split.root}"


def ingest_logs(args: Sequence[str]) -> str:
    """Import one access log as ``key=value`` arguments say and return the summary to print (testable without the
    CLI). Bad arguments, a missing file, bad rules or settings raise the ValueError / OSError that says which."""
    from recstack.collect.log_formats import FORMATS, LogError
    from recstack.collect.log_import import import_log
    from recstack.collect.log_rules import load_rules
    from recstack.config import collect_settings

    options: dict[str, str] = {}
    overrides: list[str] = []
    for arg in args:
        key, equals, value = arg.partition("=")
        if not equals:
            raise ValueError(f"expected key=value, got {arg!r}")
        if key.startswith("collector."):
            overrides.append(f"{key.removeprefix('collector.')}={value}")
        elif key in INGEST_KEYS:
            options[key] = value
        else:
            raise ValueError(f"unknown argument {key!r}; ingest-logs takes {list(INGEST_KEYS)} and collector.<key>=")
    for key in ("path", "rules"):
        if not options.get(key):
            raise ValueError(f"{key}= is required, e.g. {USAGE.splitlines()[-1].strip()}")
    fmt = options.get("format", "combined")
    if fmt not in FORMATS:
        raise LogError(f"unknown log format {fmt!r}; use one of {list(FORMATS)}")
    if not Path(options["path"]).is_file():
        raise LogError(f"no such log file: {options['path']}")
    rules = load_rules(options["rules"])
    if options.get("lake"):
        overrides.append(f"lake={options['lake']}")
    settings = collect_settings(overrides)
    consented = _consented(settings) if settings.consent_required else None
    return import_log(options["path"], fmt, rules, settings, erased=_erased(settings), consented=consented).text()


def _consented(settings: CollectSettings) -> Callable[[list[str]], set[str]]:
    """Which subjects gave analytics consent, from the collector's consent records (opt-in, as at the API door). A
    log's anonymous visitors (a pseudonym of address and browser) have no consent record, so under opt-in only the
    lines of signed-in users who consented are imported; set collector.consent_required=false where the logs have a
    legal basis of their own."""
    import redis

    from recstack.collect.producer import consent_key

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def consented(subjects: list[str]) -> set[str]:
        pipe = client.pipeline(transaction=False)
        for subject in subjects:
            pipe.hget(consent_key(settings, subject), "analytics")
        return {s for s, value in zip(subjects, pipe.execute(), strict=True) if value == b"1"}

    return consented


def _erased(settings: CollectSettings) -> frozenset[str]:
    """The tombstone set: erased people's lines are not imported again. Redis unreachable is an error (an import that
    could bring an erased person back must not run blind)."""
    import redis

    from recstack.collect.records import tombstone_key

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        return frozenset(m.decode() for m in client.smembers(tombstone_key(settings.names)))
    except redis.RedisError as error:
        raise ValueError(
            f"cannot read the erasure tombstones from Redis ({type(error).__name__}): start Redis or set "
            "collector.redis_url, so that erased people's log lines are not imported again"
        ) from None


def _message(exc: BaseException) -> str:
    # Hydra wraps errors raised by a `_target_`; the cause is what the user can act on.
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, MissingMandatoryValue) and exc.full_key:
        return f"{exc.full_key} is required (it is ??? in the config): add {exc.full_key}=<value>"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line


def main(argv: Sequence[str] | None = None) -> None:
    command, rest = split_command("recstack-data", argv, COMMANDS, USAGE)
    if command == "ingest-logs":
        if any(arg in ("-h", "--help") for arg in rest):
            print(USAGE)
            sys.exit(0)
        try:
            print(ingest_logs(rest))
        except (ValueError, OSError) as exc:
            print(f"recstack-data {command}: error: {_message(exc)}", file=sys.stderr)
            sys.exit(2)
        return

    @hydra.main(config_path=str(config_dir()), config_name="prepare", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        try:
            out = run(command, cfg)
        except (*_CLEAR_ERRORS, InstantiationException) as exc:
            print(f"recstack-data {command}: error: {_message(exc)}", file=sys.stderr)
            sys.exit(2)
        print(out)

    sys.argv = [f"recstack-data-{command}", *rest]  # Hydra parses sys.argv; it must not see the subcommand
    app()


if __name__ == "__main__":
    main()
