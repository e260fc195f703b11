"""Raw string ids to integer codes and back: factorize once, then compact what survives cleaning into 0..n-1.

Order of the contiguous indices: sorted raw id, numerically when every id of that kind is a decimal integer (so
ML-100K's user "1" is ``user_idx`` 0), lexicographically otherwise. It depends only on which ids survive, never on
the source's row order, so two sources holding the same events in a different order get the same indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recstack.data.schema import Dataset
from recstack.data.sorting import stable_argsort


def _as_arrow_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Arrow strings without copying: a pandas ``str`` column is already Arrow-backed (often in chunks)."""
    if isinstance(values, pd.Series):
        values = pa.array(values.array) if hasattr(values.array, "__arrow_array__") else pa.array(values)
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    return values


def factorize(
    values: pd.Series | pa.Array | pa.ChunkedArray, *, fill_null: str | None = None
) -> tuple[np.ndarray, pa.Array]:
    """``(codes int32, uniques)`` with ``uniques.take(codes) == values``; codes follow first appearance.

    Missing values are an error unless ``fill_null`` gives a replacement.
    """
    arr = _as_arrow_strings(values)
    if arr.null_count:
        if fill_null is None:
            raise ValueError(f"{arr.null_count} missing id(s); every interaction needs a user_id and an item_id")
        arr = pc.fill_null(arr, fill_null)
    encoded = pc.dictionary_encode(arr)
    if isinstance(encoded, pa.ChunkedArray):
        # Chunks are encoded against one growing dictionary, so equal lengths mean one shared dictionary; else unify.
        if encoded.num_chunks == 0:
            return np.empty(0, dtype=np.int32), pa.array([], type=arr.type)
        if len({len(c.dictionary) for c in encoded.chunks}) > 1:
            encoded = encoded.unify_dictionaries()
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
        return codes.astype(np.int32, copy=False), encoded.chunk(0).dictionary
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False), encoded.dictionary


def natural_order(ids: pa.Array) -> np.ndarray:
    """Positions that sort ``ids`` numerically if all are decimal integers (up to 18 digits), else as strings."""
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64)
    numeric = pc.all(pc.match_substring_regex(ids, r"^[0-9]{1,18}$")).as_py()
    key = pc.cast(ids, pa.int64()) if numeric else ids
    return pc.sort_indices(key).to_numpy().astype(np.int64)


@dataclass(frozen=True)
class Encoded:
    """Interactions as parallel arrays of integer codes (one row per event); ``row`` is the source row number."""

    user: np.ndarray  # int32 codes into user_ids
    item: np.ndarray  # int32 codes into item_ids
    timestamp: np.ndarray  # int64
    value: np.ndarray  # float32
    event: np.ndarray  # int32 codes into event_types
    row: np.ndarray  # int64
    user_ids: pa.Array
    item_ids: pa.Array
    event_types: pa.Array

    def __len__(self) -> int:
        return len(self.user)

    def take(self, selector: np.ndarray) -> Encoded:
        """Rows selected by a boolean mask or positions; id tables are shared."""
        return Encoded(
            user=self.user[selector],
            item=self.item[selector],
            timestamp=self.timestamp[selector],
            value=self.value[selector],
            event=self.event[selector],
            row=self.row[selector],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            event_types=self.event_types,
        )


def encode(dataset: Dataset) -> Encoded:
    """Factorize the string columns of ``dataset.interactions`` once; later steps work on int32 codes only."""
    frame = dataset.interactions
    user, user_ids = factorize(frame["user_id"])
    item, item_ids = factorize(frame["item_id"])
    event, event_types = factorize(frame["event_type"], fill_null="")
    timestamp = frame["timestamp"].to_numpy(dtype=np.int64, na_value=0)
    value = frame["value"].to_numpy(dtype=np.float32, na_value=np.nan)
    return Encoded(
        user=user,
        item=item,
        timestamp=timestamp,
        value=value,
        event=event,
        row=np.arange(len(frame), dtype=np.int64),
        user_ids=user_ids,
        item_ids=item_ids,
        event_types=event_types,
    )


def compact(codes: np.ndarray, ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Map the codes in use to contiguous indices in natural raw-id order: ``(index per code int32, kept ids)``.

    The first array is indexed by code (``-1`` for codes no row uses), so ``lookup[codes]`` gives the new indices.
    """
    used = np.flatnonzero(np.bincount(codes, minlength=len(ids)) > 0)
    kept = ids.take(pa.array(used))
    order = natural_order(kept)
    lookup = np.full(len(ids), -1, dtype=np.int32)
    lookup[used[order]] = np.arange(len(used), dtype=np.int32)
    return lookup, kept.take(pa.array(order))


def recompact(index: np.ndarray, ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Drop unused indices from an already compact map, keeping the order: ``(new index per old index, kept ids)``."""
    used = np.bincount(index, minlength=len(ids)) > 0
    lookup = (np.cumsum(used) - 1).astype(np.int32)
    lookup[~used] = -1
    return lookup, ids.filter(pa.array(used))


def _is_identity(row: np.ndarray) -> bool:
    """True when ``row`` is ``0..n-1`` in order (as :func:`encode` makes it): then ``row[order]`` is ``order``."""
    n = len(row)
    return n == 0 or (int(row[0]) == 0 and int(row[-1]) == n - 1 and bool((np.diff(row) == 1).all()))


def index_in_pair_order(enc: Encoded) -> Encoded:
    """Codes become contiguous indices (natural raw-id order); rows sorted by (user, item), source order within a pair.

    Every later step (duplicates, pair grouping, splitting) needs rows grouped by pair; sorting once here, and
    filtering in order afterwards, means 20M rows are sorted once in the whole preparation.
    """
    user_lookup, user_ids = compact(enc.user, enc.user_ids)
    item_lookup, item_ids = compact(enc.item, enc.item_ids)
    user = user_lookup[enc.user]
    item = item_lookup[enc.item]
    key = user.astype(np.int64)
    key *= len(item_ids)
    key += item
    order = stable_argsort(key)
    del key
    return Encoded(
        user=user[order],
        item=item[order],
        timestamp=enc.timestamp[order],
        value=enc.value[order],
        event=enc.event[order],
        row=order if _is_identity(enc.row) else enc.row[order],
        user_ids=user_ids,
        item_ids=item_ids,
        event_types=enc.event_types,
    )


def drop_unused_ids(enc: Encoded) -> Encoded:
    """Re-number indices after rows were filtered out, keeping their order (so a pair-sorted table stays sorted)."""
    user_lookup, user_ids = recompact(enc.user, enc.user_ids)
    item_lookup, item_ids = recompact(enc.item, enc.item_ids)
    if len(user_ids) == len(enc.user_ids) and len(item_ids) == len(enc.item_ids):
        return enc
    return Encoded(
        user=user_lookup[enc.user],
        item=item_lookup[enc.item],
        timestamp=enc.timestamp,
        value=enc.value,
        event=enc.event,
        row=enc.row,
        user_ids=user_ids,
        item_ids=item_ids,
        event_types=enc.event_types,
    )


def _rows_for(ids: pa.Array, table: pd.DataFrame, key: str) -> pd.DataFrame:
    """``table``'s row for each of ``ids`` (the first one when ``key`` repeats), all-null where there is none.

    One Arrow hash lookup instead of pandas' drop_duplicates + set_index + reindex (1M users: ~0.3 s vs ~2.5 s).
    """
    keys = _as_arrow_strings(table[key]) if len(table) else pa.array([], type=pa.string())
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    position = pc.index_in(ids.cast(keys.type), value_set=keys).to_numpy(zero_copy_only=False)  # NaN: no row
    labels = np.where(np.isnan(position), -1, np.nan_to_num(position)).astype(np.int64)
    body = table.drop(columns=[key]).reset_index(drop=True)
    return body.reindex(labels).reset_index(drop=True)  # label -1 is absent: an all-null row


def items_table(item_ids: pa.Array, metadata: pd.DataFrame) -> pd.DataFrame:
    """``items.parquet``: ``item_idx``, ``item_id`` and every metadata column, for the catalogue items in order.

    Items without metadata get an empty title, text and category list and a null year; metadata of items that are
    not in the catalogue (no interaction left after cleaning) is not kept.
    """
    meta = _rows_for(item_ids, metadata, "item_id")
    for column in ("title", "text"):
        meta[column] = meta[column].astype("str").where(meta[column].notna(), "")
    cats = meta["categories"]
    meta["categories"] = [list(c) if isinstance(c, list | tuple | np.ndarray) else [] for c in cats]
    meta["year"] = meta["year"].astype("Int64")
    meta.insert(0, "item_id", pd.Series(item_ids.to_pandas(), dtype="str"))
    meta.insert(0, "item_idx", np.arange(len(meta), dtype=np.int32))
    return meta


def users_table(user_ids: pa.Array, demographics: pd.DataFrame) -> pd.DataFrame:
    """``users.parquet``: ``user_idx``, ``user_id`` and the demographic columns (null where a user has none)."""
    frame = _rows_for(user_ids, demographics, "user_id")
    frame.insert(0, "user_id", pd.Series(user_ids.to_pandas(), dtype="str"))
    frame.insert(0, "user_idx", np.arange(len(frame), dtype=np.int32))
    return frame
