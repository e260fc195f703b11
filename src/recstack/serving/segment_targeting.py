"""Segments in /recommend: a named segment's popular items restrict or boost an answer, and a cold user gets the
popularity of the segments it is in instead of the global one.

Each segment's popular items come from the last batch run (``segments_key(names, "meta")``: ``top_items``, the items
its members used most in the last 30 days). Every worker keeps them in a :class:`SegmentCache`, mapped once onto the
served bundle's item rows and refreshed in the background at most every ``ttl_s`` (the request that finds it stale
still answers from the old copy), so the hot path adds no Redis round trip. A segment the cache does not know forces
one refresh (at most one per second per worker) before it is called unknown: a segment created a moment ago is found.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Mode = Literal["restrict", "boost"]
FORCED_REFRESH_S = 1.0
"""A refresh forced by an unknown segment name happens at most this often per worker (bounded cost of typos)."""
RANKINGS_KEPT = 1024
"""Merged cold-start rankings remembered per distinct set of segments (cleared on every refresh)."""


@dataclass(frozen=True)
class SegmentItems:
    """One segment's popular items as the served bundle knows them: item rows, best first, and a weight in (0, 1]
    each (the item's count over the segment's top count). Items the bundle does not hold are left out."""

    items: np.ndarray
    weights: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.items) == 0


@dataclass(frozen=True)
class Target:
    """What a request's ``segment`` asks of the pipeline: ``restrict`` to the segment's items, or ``boost`` them by
    ``weight`` x their segment weight on top of the z-scored final score."""

    items: np.ndarray
    weights: np.ndarray
    mode: Mode
    weight: float = 1.0


def segment_items(top_items: Any, item_index: Mapping[str, int]) -> SegmentItems:
    """``[[item_id, n], ...]`` (a run's ``top_items``) -> :class:`SegmentItems`; malformed pairs are skipped."""
    rows: list[int] = []
    counts: list[float] = []
    seen: set[int] = set()
    for pair in top_items if isinstance(top_items, list) else ():
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        row = item_index.get(str(pair[0]))
        try:
            n = float(pair[1])
        except (TypeError, ValueError):
            continue
        if row is None or row in seen or not n > 0:
            continue
        seen.add(row)
        rows.append(int(row))
        counts.append(n)
    if not rows:
        return SegmentItems(np.empty(0, np.int64), np.empty(0, np.float32))
    weights = np.asarray(counts, np.float64)
    order = np.lexsort((np.asarray(rows), -weights))  # best first, ties by item row (reproducible)
    return SegmentItems(
        np.asarray(rows, np.int64)[order], (weights[order] / weights[order[0]]).astype(np.float32, copy=False)
    )


def parse_meta(raw: Mapping[Any, Any], item_index: Mapping[str, int]) -> dict[str, SegmentItems]:
    """The meta hash (name -> JSON of the last run) -> each segment's items; an entry that is not valid JSON is
    skipped with a warning (one bad entry must not hide the others)."""
    out: dict[str, SegmentItems] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            meta = json.loads(value)
        except (TypeError, ValueError):
            logger.warning("segment meta of %r is not JSON; it is ignored until the next run", name[:64])
            continue
        out[name] = segment_items(meta.get("top_items") if isinstance(meta, dict) else None, item_index)
    return out


def merged_ranking(
    parts: Iterable[SegmentItems], fallback: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """A cold user's popularity: its segments' items first, by the sum of their weights over the segments (each
    segment counts once, whatever its size), then the ``fallback`` ranking (global popularity) for the rest, so
    filters and exclusions still leave enough candidates. None when no segment has items."""
    totals: dict[int, float] = {}
    for part in parts:
        for row, weight in zip(part.items.tolist(), part.weights.tolist()):
            totals[row] = totals.get(row, 0.0) + weight
    if not totals:
        return None
    rows = np.fromiter(totals, np.int64, len(totals))
    sums = np.fromiter(totals.values(), np.float64, len(totals))
    order = np.lexsort((rows, -sums))
    rows, sums = rows[order], sums[order]
    overall, overall_scores = fallback
    rest = ~np.isin(overall, rows)
    # Segment items score above every fallback item (fallback scores are in [0, 1]).
    scores = np.concatenate([1.0 + sums / sums[0], overall_scores[rest].astype(np.float64)]).astype(np.float32)
    return np.concatenate([rows, overall[rest]]), scores


class SegmentCache:
    """Per worker: every segment's popular items, from ``load()`` (the meta hash, or None when Redis is unavailable),
    mapped onto ``item_index``; stale after ``ttl_s``."""

    def __init__(
        self,
        load: Callable[[], Awaitable[Mapping[Any, Any] | None]],
        item_index: Mapping[str, int],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._item_index = item_index
        self._ttl = float(ttl_s)
        self._clock = clock
        self._table: dict[str, SegmentItems] = {}
        self._loaded_at: float | None = None
        self._forced_at = -FORCED_REFRESH_S
        self._refreshing: asyncio.Task | None = None
        self._rankings: dict[frozenset[str], tuple[np.ndarray, np.ndarray] | None] = {}

    async def refresh(self) -> None:
        raw = await self._load()
        if raw is None:
            return  # Redis unavailable: keep the last copy; retried when it is next found stale
        self._table = parse_meta(raw, self._item_index)
        self._rankings = {}
        self._loaded_at = self._clock()

    async def table(self) -> Mapping[str, SegmentItems]:
        """The current copy: loaded on first use, refreshed in the background once stale."""
        if self._loaded_at is None:
            await self.refresh()
            return self._table
        if self._clock() - self._loaded_at >= self._ttl and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.ensure_future(self._background())
        return self._table

    async def _background(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a bug must not surface as an unretrieved task error on every refresh
            logger.exception("refreshing the segment cache failed; answering from the last copy")

    async def lookup(self, name: str) -> SegmentItems | None:
        """One segment's items; None when no batch run has published it (after one forced refresh)."""
        found = (await self.table()).get(name)
        if found is None and self._clock() - self._forced_at >= FORCED_REFRESH_S:
            self._forced_at = self._clock()
            await self.refresh()
            found = self._table.get(name)
        return found

    async def ranking(
        self, segments: frozenset[str], fallback: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The merged popularity of ``segments`` (see :func:`merged_ranking`), remembered per set until the next
        refresh; None when none of them has items."""
        table = await self.table()
        if segments in self._rankings:
            return self._rankings[segments]
        merged = merged_ranking((table[name] for name in sorted(segments) if name in table), fallback)
        if len(self._rankings) >= RANKINGS_KEPT:
            self._rankings.clear()
        self._rankings[segments] = merged
        return merged
