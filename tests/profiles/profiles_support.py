"""A small synthetic event lake written with the lake's own writer (recstack.data.lake.write_rows), an item metadata
CSV with categories, and the fixed "now" of the profile and segment tests (a module of its own name: every test
folder has a conftest.py, so ``from conftest import`` would find another folder's).

Add rows with ``LakeBuilder.event(...)`` / ``.alias(...)``, then ``.write()``; ``.root`` is the lake, ``.items_path``
the CSV, ``AS_OF`` a fixed "now" (times are given as offsets before it, so hour and day boundaries are exact)."""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


def random_session(
    builder: LakeBuilder,
    rng: random.Random,
    user: str,
    at: timedelta,
    *,
    max_events: int,
    same_ms: float,
    gaps_min: Sequence[int],
    kinds: Sequence[str],
    devices: Sequence[str],
    categories: Sequence[str],
    items: Mapping[str, object],
) -> None:
    """One session of ``user``, its events ``at`` then earlier (``at``: how long before AS_OF), ``gaps_min`` minutes
    apart (gaps of 30+ minutes split it), each of a random kind and device, with items (and an unknown one), values,
    stated categories, local hours, early client clocks and, with probability ``same_ms``, a second event at the same
    millisecond: the cases the profiles and segments read."""
    for _ in range(rng.randint(1, max_events)):
        kind = rng.choice(kinds)
        extra: dict = {"device_class": rng.choice(devices)}
        if kind != "search":
            extra["item"] = rng.choice([*items, "m_unknown"])
        if kind in ("dwell", "rating", "scroll"):
            extra["value"] = {"dwell": rng.randint(1, 90) * 1000.0, "rating": float(rng.randint(1, 5))}.get(
                kind, rng.random()
            )
        if rng.random() < 0.15:
            extra["category"] = rng.choice(categories)  # a stated category beside the item's
        if rng.random() < 0.3:
            extra["local_hour"] = rng.randint(0, 23)
        if rng.random() < 0.2:  # a client clock a little early: the event time is the client's
            extra["client_ts"] = AS_OF - at - timedelta(seconds=rng.randint(1, 120))
        builder.event(user, kind, at, **extra)
        if rng.random() < same_ms:  # a second event at the same millisecond
            builder.event(user, "view", at, item=rng.choice(list(items)), device_class=extra["device_class"])
        at -= timedelta(minutes=rng.choice(gaps_min))
