"""Profile and segment fixtures: a small synthetic event lake written with the lake's own writer
(recstack.data.lake.write_rows), an item metadata CSV with categories, and a Redis namespace of the test's own.

Use ``lake_builder``: add rows with ``.event(...)`` / ``.alias(...)``, then ``.write()``; ``.root`` is the lake,
``.items_path`` the CSV, ``AS_OF`` a fixed "now" (times are given as offsets before it, so hour and day boundaries are
exact)."""

from __future__ import annotations

import csv
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from recstack.collect.records import StreamNames
from recstack.data import lake

AS_OF = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)  # half past an hour: windows end with the 12:00 bucket
AS_OF_MS = int(AS_OF.timestamp() * 1000)
REDIS_URL = "redis://127.0.0.1:6379/0"

# item -> categories (the catalogue every fixture lake shares)
ITEMS: dict[str, tuple[str, ...]] = {
    "i1": ("Sci-Fi", "Action"),
    "i2": ("Sci-Fi",),
    "i3": ("Comedy",),
    "i4": ("Drama",),
    "i5": ("Comedy", "Drama"),
    "i6": ("Horror",),
}


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass
class LakeBuilder:
    """Rows for a fixture lake; nothing is on disk until :meth:`write`."""

    root: Path
    items_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    aliases: list[dict[str, Any]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count())

    def event(
        self,
        user: str,
        kind: str = "view",
        before: timedelta = timedelta(0),
        item: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One event ``before`` AS_OF (received then, no client time unless ``client_ts`` is given as a datetime)."""
        row: dict[str, Any] = {
            "event_id": f"e{next(self._ids)}",
            "user_id": user,
            "anonymous": False,
            "item_id": item,
            "event_type": kind,
            "received_ts": ms(AS_OF - before),
            "source": "api",
            "device_class": "desktop",
        }
        row.update(extra)
        if isinstance(row.get("client_ts"), datetime):
            row["client_ts"] = ms(row["client_ts"])
        self.events.append(row)
        return row

    def burst(self, user: str, n: int, start: timedelta, every: timedelta, **extra: Any) -> None:
        """``n`` events, the first ``start`` before AS_OF, then one every ``every``."""
        for k in range(n):
            self.event(user, before=start - every * k, **extra)

    def alias(self, anonymous_id: str, user_id: str, before: timedelta = timedelta(0), **extra: Any) -> None:
        self.aliases.append(
            {"anonymous_id": anonymous_id, "user_id": user_id, "received_ts": ms(AS_OF - before), **extra}
        )

    def write(self) -> Path:
        if self.events:
            lake.write_rows(self.root, "events", self.events)
        if self.aliases:
            lake.write_rows(self.root, "aliases", self.aliases)
        self.events, self.aliases = [], []
        return self.root


def write_items(path: Path, items: dict[str, tuple[str, ...]] = ITEMS) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title", "categories"])
        for item, categories in items.items():
            writer.writerow([item, f"title {item}", "|".join(categories)])
    return path


@pytest.fixture
def lake_builder(tmp_path: Path) -> LakeBuilder:
    root = tmp_path / "lake"
    root.mkdir()
    return LakeBuilder(root=root, items_path=write_items(tmp_path / "items.csv"))


@pytest.fixture
def names() -> Iterator[StreamNames]:
    """A stream prefix of the test's own; every key under it is deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield StreamNames(stream=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running at {REDIS_URL} ({exc}); start it (tests marked redis need it)")
    yield client
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
