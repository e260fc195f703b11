"""numpy's random integers at any position of the stream, so that a distributed engine draws what numpy draws.

The random and new_items splits order each user's pairs by ``Generator.integers(0, 1 << bits, n)`` keys drawn in
(user, item) pair order (:func:`recstack.data.split.shuffle_within_groups`). An engine that spreads the pairs over
workers cannot replay that one sequential stream, but it does not need to: for a power-of-two range numpy's
``integers`` takes exactly one 64-bit draw of the PCG64 bit generator per number (``bits > 32``: its top ``bits``
bits) or one 32-bit half of a draw (``bits <= 32``, low half first), with no rejection. So draw ``k`` can be computed
alone after ``PCG64.advance``. :class:`StreamCursor` does that, and the tests check it against
numpy for both widths and with a half-used 32-bit buffer (``tests/data/test_spark_engine.py``).

:func:`tie_ranks` replays the rare redraw of keys that tie within a user. Together they let an engine reproduce the
embedded split's stages exactly instead of approximating them with an engine-specific RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recstack.data.sorting import stable_lexsort

_FRESH_BITS = 62  # shuffle_within_groups redraws tied keys with integers(0, 1 << 62)


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "state": dict(state["state"])}


@dataclass(frozen=True)
class StreamCursor:
    """A point in a numpy PCG64 stream: ``PCG64.state`` (picklable, so it travels to Spark workers)."""

    state: dict[str, Any]

    @classmethod
    def from_seed(cls, seed: int) -> StreamCursor:
        """Where ``np.random.default_rng(seed)`` starts."""
        return cls(np.random.PCG64(seed).state)

    @classmethod
    def of(cls, rng: np.random.Generator) -> StreamCursor:
        """Where ``rng`` is now."""
        return cls(_copy_state(rng.bit_generator.state))

    def generator(self) -> np.random.Generator:
        """A generator that continues from here (the stream numpy would continue with)."""
        bit_generator = np.random.PCG64()
        bit_generator.state = _copy_state(self.state)
        return np.random.Generator(bit_generator)

    @property
    def _buffered(self) -> bool:
        return bool(self.state.get("has_uint32"))

    def _raw(self, start: int, count: int) -> np.ndarray:
        """64-bit draws ``start .. start + count - 1`` from here (the 32-bit buffer is not one of them)."""
        bit_generator = np.random.PCG64()
        bit_generator.state = _copy_state(self.state)
        if start:
            bit_generator.advance(start)
        return bit_generator.random_raw(count)

    def _advanced(self, raw: int, buffered: bool, buffer: int) -> StreamCursor:
        bit_generator = np.random.PCG64()
        bit_generator.state = _copy_state(self.state)
        if raw:
            bit_generator.advance(raw)
        state = _copy_state(bit_generator.state)
        state["has_uint32"], state["uinteger"] = int(buffered), int(buffer)
        return StreamCursor(state)

    def integers(self, bits: int, start: int, count: int) -> np.ndarray:
        """Numbers ``start .. start + count - 1`` of ``generator().integers(0, 1 << bits, n, dtype=np.int64)``
        (any ``n`` above them), as int64."""
        if not 1 <= bits <= 63:
            raise ValueError(f"bits={bits}: expected 1..63")
        if count <= 0:
            return np.empty(0, dtype=np.int64)
        if bits > 32:  # one 64-bit draw each, its top bits (Lemire's method never rejects for a power of two)
            return (self._raw(start, count) >> np.uint64(64 - bits)).astype(np.int64)
        # One 32-bit half each: a buffered half first, then each 64-bit draw's low half, then its high half.
        halves = np.empty(count, dtype=np.uint64)
        filled, position = 0, start
        if self._buffered and position == 0:
            halves[0] = np.uint64(self.state["uinteger"])
            filled, position = 1, 1
        if filled < count:
            half = position - (1 if self._buffered else 0)  # index among the halves of the 64-bit draws
            need = count - filled
            raw = self._raw(half // 2, (half % 2 + need + 1) // 2)
            split = np.empty(2 * len(raw), dtype=np.uint64)
            split[0::2] = raw & np.uint64(0xFFFFFFFF)
            split[1::2] = raw >> np.uint64(32)
            halves[filled:] = split[half % 2 : half % 2 + need]
        return (halves >> np.uint64(32 - bits)).astype(np.int64)

    def after_integers(self, bits: int, count: int) -> StreamCursor:
        """The cursor after ``count`` numbers of :meth:`integers` with ``bits``."""
        if count <= 0:
            return self
        if bits > 32:
            return self._advanced(count, self._buffered, int(self.state.get("uinteger", 0)))
        halves = count - (1 if self._buffered else 0)
        raw = (halves + 1) // 2
        if halves % 2 == 0:
            return self._advanced(raw, False, 0)
        last = int(self._raw(raw - 1, 1)[0])
        return self._advanced(raw, True, last >> 32)


def draws_at(cursor: StreamCursor, bits: int, positions: np.ndarray, *, max_gap: int = 4096) -> np.ndarray:
    """``cursor.integers(bits, p, 1)`` for every ``p`` in ``positions`` (any order), drawing each contiguous stretch
    once: a worker holding a range of positions pays one ``advance`` per stretch."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty(len(positions), dtype=np.int64)
    if len(positions) == 0:
        return out
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]
    breaks = np.flatnonzero(np.diff(sorted_pos) > max_gap) + 1
    for chunk in np.split(np.arange(len(sorted_pos)), breaks):
        lo, hi = int(sorted_pos[chunk[0]]), int(sorted_pos[chunk[-1]])
        values = cursor.integers(bits, lo, hi - lo + 1)
        out[order[chunk]] = values[sorted_pos[chunk] - lo]
    return out


def key_bits(max_group: int, max_group_size: int) -> int:
    """The key width ``shuffle_within_groups`` draws for groups ``0..max_group`` of at most ``max_group_size``."""
    off_bits = max(int(max_group_size - 1).bit_length(), 1)
    group_bits = max(int(max_group).bit_length(), 1)
    return 63 - group_bits - off_bits


def tie_ranks(run: np.ndarray, cursor: StreamCursor) -> tuple[np.ndarray, StreamCursor]:
    """Order inside runs of tied keys, as ``shuffle_within_groups`` redraws them.

    ``run``: for every member of a tie (positions whose (group, key) equals a neighbour's), in (group, key, offset)
    order, a run id that changes between runs. ``cursor``: the stream right after the main keys. Returns each
    member's rank inside its run and the cursor after the redraws (numpy redraws all members until no two of a run
    tie again).
    """
    run = np.asarray(run, dtype=np.int64)
    while True:
        fresh = cursor.integers(_FRESH_BITS, 0, len(run))
        cursor = cursor.after_integers(_FRESH_BITS, len(run))
        within = stable_lexsort([fresh, run])
        f, r = fresh[within], run[within]
        if not ((r[1:] == r[:-1]) & (f[1:] == f[:-1])).any():
            break
    rank = np.empty(len(run), dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(r[1:] != r[:-1]) + 1)) if len(run) else np.empty(0, np.int64)
    lengths = np.diff(np.append(starts, len(run)))
    rank[within] = np.arange(len(run)) - np.repeat(starts, lengths)
    return rank, cursor


RANDOM_STAGE_SCHEMA = pa.schema(
    [
        ("u", pa.int64()),
        ("i", pa.int64()),
        ("offs", pa.int64()),
        ("rkey", pa.int64()),
        ("stage", pa.int8()),
        ("tied", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class RandomStages:
    """The random split's stages for whole users, wherever their pairs are (a Spark partition, or all of them).

    Called on a table of pairs ``u, i, start`` sorted by (user, item), each user complete, ``start`` the position of
    the user's first pair in the global (user, item) order. Each pair gets numpy's key at its position, a rank inside
    its user by key, and its stage by RecBole's counting (:func:`~recstack.data.split.ratio_counts`), as
    :func:`~recstack.data.split.split_pairs` assigns them. Keys that tie inside a user (rare: ``bits`` is usually
    40+) are flagged; numpy redraws those from the stream's end, so the caller orders them with :func:`tie_ranks`.
    """

    cursor: StreamCursor
    bits: int
    ratios: tuple[float, float, float]

    def __call__(self, pairs: pa.Table) -> pa.Table:
        from recstack.data.split import ratio_counts

        u = pairs.column("u").to_numpy().astype(np.int64)
        n = len(u)
        starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1]))) if n else np.empty(0, np.int64)
        sizes = np.diff(np.append(starts, n))
        offs = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
        key = draws_at(self.cursor, self.bits, pairs.column("start").to_numpy().astype(np.int64) + offs)
        order = np.lexsort((key, u))  # inside a user by key; the user's rows stay in its run
        rank = np.empty(n, dtype=np.int64)
        rank[order] = offs  # offs is also "position inside the run" for the sorted order
        tied_pair = (u[order][1:] == u[order][:-1]) & (key[order][1:] == key[order][:-1])
        tied = np.zeros(n, dtype=bool)
        tied[order[1:][tied_pair]] = tied[order[:-1][tied_pair]] = True
        cnt = np.repeat(ratio_counts(sizes, self.ratios), sizes, axis=0)
        stage = (rank >= cnt[:, 0]).astype(np.int8) + (rank >= cnt[:, 0] + cnt[:, 1])
        return pa.Table.from_arrays(
            [
                pa.array(u),
                pairs.column("i").cast(pa.int64()),
                pa.array(offs),
                pa.array(key),
                pa.array(stage),
                pa.array(tied),
            ],
            schema=RANDOM_STAGE_SCHEMA,
        )
