"""``recstack-collect {consume,erase,purge,keygen} [key=value ...]`` over ``configs/collect.yaml``.

* ``consume``: the Redis Stream -> Parquet lake consumer (recstack.collect.consumer) until SIGTERM/SIGINT (or
  ``max_seconds``): flushes, acknowledges, exits 0. Progress is one INFO line per flush on stderr; the final
  statistics are one JSON line on stdout.
* ``erase user_id=<id> | visitor_id=<id> | pseudonym=<hex>``: tombstone the subject in Redis (the collector refuses
  it, the consumer drops its rows in flight), wait for the consumer to store what was in flight, then rewrite the
  lake without the subject's rows (recstack.collect.lake_admin). Prints the report as JSON.
* ``purge [older_than=395d]``: delete lake partitions older than that (audit is kept). Prints the report as JSON.
* ``keygen <file>``: write a new pseudonymisation key (64 random bytes as hex, mode 0600); never overwrites.

Everything after the subcommand is a Hydra override, composed here rather than by ``@hydra.main`` so that a bad
override is one line like every other error: ``recstack-collect <cmd>: error: ...`` and exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from recstack.cli.subcommands import split_command
from recstack.config import collect_settings, compose

COMMANDS: tuple[str, ...] = ("consume", "erase", "purge", "keygen")
USAGE = (
    "usage: recstack-collect {consume,erase,purge,keygen} [key=value ...]\n"
    "  recstack-collect consume [consumer=<name>] [max_seconds=<s>] [collector.lake=<dir>] [collector.stream=<key>]\n"
    "  recstack-collect erase user_id=<raw id> | visitor_id=<raw cookie id> | pseudonym=<32 hex> [linked=true]\n"
    "  recstack-collect purge [older_than=395d]\n"
    "  recstack-collect keygen <file>"
)
KEY_BYTES = 64


class UsageError(ValueError):
    """Arguments that cannot work: the message says what to pass instead."""


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def consume(cfg: DictConfig) -> int:
    import redis

    from recstack.collect.consumer import LakeConsumer

    settings = collect_settings(cfg.collector)
    consumer = LakeConsumer(
        settings,
        cfg.consumer or f"{socket.gethostname()}-{os.getpid()}",
        claim_idle_s=float(cfg.claim_idle_s),
        max_buffer_rows=int(cfg.max_buffer_rows),
        dedupe_ids=int(cfg.dedupe_ids),
    )
    previous = {sig: signal.signal(sig, lambda *_: consumer.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = consumer.run(max_seconds=None if cfg.max_seconds is None else float(cfg.max_seconds))
    except redis.ConnectionError as exc:
        raise UsageError(
            f"cannot reach Redis at {_redacted(settings.redis_url)} ({exc}); start it or set collector.redis_url"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(asdict(stats)), flush=True)
    return 0


def _ids(value: object) -> list[str]:
    if value is None:
        return []
    items = list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]
    return [str(item) for item in items if str(item)]


def erase_command(cfg: DictConfig) -> dict[str, object]:
    import redis

    from recstack.collect.consumer import stream_end, wait_until_stored
    from recstack.collect.lake_admin import PSEUDONYM, erase, linked_visitors
    from recstack.collect.pseudonymise import Pseudonymiser
    from recstack.collect.records import tombstone_key

    settings = collect_settings(cfg.collector)
    given = set()
    for pseudonym in _ids(cfg.pseudonym):
        if not PSEUDONYM.match(pseudonym):
            raise UsageError(f"pseudonym={pseudonym!r} is not a pseudonym (32 lowercase hex characters)")
        given.add(pseudonym)
    users, visitors = _ids(cfg.user_id), _ids(cfg.visitor_id)
    if users or visitors:
        keyed = Pseudonymiser(settings.hmac_key())
        given |= {keyed.user(u) for u in users} | {keyed.visitor(v) for v in visitors}
    if not given:
        raise UsageError("erase needs user_id=<raw id>, visitor_id=<raw cookie id> or pseudonym=<32 hex>")
    linked = linked_visitors(settings.lake, given) if cfg.linked else set()
    subjects = given | linked
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        # First: from here on the collector refuses the subjects and the consumer drops their rows in flight.
        client.sadd(tombstone_key(settings.names), *sorted(subjects))
        end = stream_end(client, settings.names)
        drained = end is None or wait_until_stored(client, settings.names, end, float(cfg.wait_s))
    except redis.ConnectionError as exc:
        raise UsageError(
            f"cannot reach Redis at {_redacted(settings.redis_url)} ({exc}): erasure tombstones the subject there "
            "first so that events in flight are dropped too; start Redis or set collector.redis_url"
        ) from None
    finally:
        client.close()
    if not drained:
        logging.getLogger(__name__).warning(
            "the consumer had not stored everything in flight within wait_s=%s s (is it running?); the lake is "
            "rewritten now and the consumer drops the subject's rows still in the stream when it stores them",
            cfg.wait_s,
        )
    report = erase(settings.lake, subjects)
    return {**report.as_dict(), "linked": sorted(linked), "in_flight_stored": drained}


def older_than_days(value: object) -> int:
    match = re.fullmatch(r"(\d+)d?", str(value).strip())
    if not match or int(match[1]) < 1:
        raise UsageError(f"older_than={value!r}: give whole days, e.g. older_than=395d")
    return int(match[1])


def purge_command(cfg: DictConfig) -> dict[str, object]:
    from recstack.collect.lake_admin import purge

    settings = collect_settings(cfg.collector)
    return purge(settings.lake, older_than_days(cfg.older_than)).as_dict()


def keygen(args: Sequence[str]) -> Path:
    """Write a new key file: 64 random bytes as 128 hex characters, mode 0600, created exclusively."""
    if len(args) != 1 or "=" in args[0]:
        raise UsageError("give the one file to write, e.g. recstack-collect keygen outputs/secrets/hmac.key")
    path = Path(args[0])
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite a key (it would change every pseudonym)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"collector.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line


def run(command: str, args: Sequence[str]) -> int:
    """Do ``command`` with its arguments; raises on errors (``main`` prints them)."""
    if command == "keygen":
        print(keygen(args))
        return 0
    cfg = compose("collect", list(args))
    if command == "consume":
        return consume(cfg)
    out = erase_command(cfg) if command == "erase" else purge_command(cfg)
    print(json.dumps(out))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    command, rest = split_command("recstack-collect", argv, COMMANDS, USAGE)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run(command, rest)
    except (ValueError, TypeError, KeyError, OSError, HydraException, OmegaConfBaseException) as exc:
        print(f"recstack-collect {command}: error: {_message(exc)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
