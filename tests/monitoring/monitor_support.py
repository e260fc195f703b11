"""Fixture lakes of impressions and events for the monitoring tests, written with the lake's own writer
(recstack.data.lake.write_rows: real Parquet in hour partitions). Times are offsets from ``T0`` (a day's midnight,
UTC), so day boundaries are exact. (A module of its own name: every test folder has a conftest.py.)"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from recstack.data import lake
from recstack.monitoring import lake_tables
from recstack.monitoring.spec import MetricSpec

T0 = datetime(2026, 11, 20, tzinfo=UTC)
DAY = timedelta(days=1)
MIN = timedelta(minutes=1)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass
class LakeBuilder:
    """Rows for a fixture lake; nothing is on disk until :meth:`write`."""

    root: Path
    impressions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count())
    _written: bool = False

    def impression(
        self,
        request_id: str,
        user: str | None,
        items: Sequence[str],
        at: timedelta,
        *,
        scores: Sequence[float] | None = None,
        bundle: str = "mf@1",
        experiment: str | None = None,
        arm: str | None = None,
    ) -> None:
        self.impressions.append(
            {
                "request_id": request_id,
                "user_id": user,
                "anonymous": False,
                "items": list(items),
                "scores": list(scores) if scores is not None else [float(len(items) - i) for i in range(len(items))],
                "stage": "retrieval",
                "user_source": "trained",
                "personalised": True,
                "bundle": bundle,
                "experiment": experiment,
                "arm": arm,
                "received_ts": ms(T0 + at),
            }
        )

    def event(
        self,
        user: str,
        item: str | None,
        kind: str,
        at: timedelta,
        *,
        request_id: str | None = None,
        client_at: timedelta | None = None,
        **extra: Any,
    ) -> None:
        """An event received at ``T0 + at``; ``client_at`` gives the client's clock (default: none, so the receive
        time is the event time)."""
        self.events.append(
            {
                "event_id": f"e{next(self._ids)}",
                "user_id": user,
                "anonymous": False,
                "item_id": item,
                "event_type": kind,
                "received_ts": ms(T0 + at),
                "client_ts": None if client_at is None else ms(T0 + client_at),
                "source": "api",
                "request_id": request_id,
                **extra,
            }
        )

    def write(self) -> Path:
        """Write the rows (once: a second call is a no-op, so helpers may call it freely)."""
        if self._written:
            return self.root
        self._written = True
        if self.impressions:
            lake.write_rows(self.root, "impressions", self.impressions)
        if self.events:
            lake.write_rows(self.root, "events", self.events)
        return self.root


def day(offset: int = 0) -> date:
    return (T0 + offset * DAY).date()


def loaded(builder: LakeBuilder, spec: MetricSpec, first: int = 0, last: int = 0) -> duckdb.DuckDBPyConnection:
    """A connection with the builder's lake loaded (``imp``, ``ev``, ``series``) for days ``first..last``."""
    builder.write()
    con = lake_tables.connect(threads=1)
    lake_tables.load(con, builder.root, day(first), day(last), spec)
    return con
