"""Builds the prepared split folder (source -> cleaned, indexed, split Parquet): :func:`prepare` of a
:class:`SplitSpec`. :mod:`recstack.data.prepared` reads the folder back.

Plain typed arguments only: the Hydra side (``configs/prepare.yaml`` -> :class:`SplitSpec`) is
:func:`recstack.config.split_spec`, and ``recstack.config.prepare_named("ml100k", "random")`` composes and prepares in
one call.

The folder is ``<processed_root>/<dataset>/<config-hash>/`` (layout in :mod:`recstack.data.prepared`). The hash
covers the spec's plain ``data`` and ``split`` config minus ``data.source.data_home`` (a location, not content), so the
same config reuses the folder without recomputing, and any change of content gets a new folder. Source files are
not hashed (that would read gigabytes per call); their sizes and mtimes are recorded in the manifest instead. A
growing source (the event lake) adds ``data.snapshot`` to the config, its window and a digest of its part files' names,
sizes and mtimes (:func:`recstack.data.sources.registry.source_snapshot`), so a lake that gained files is a new split.

Writes are atomic: everything goes to a hidden temporary folder next to the target, which is then renamed into
place. An interrupted run leaves no target folder; a process that loses a race finds the winner's complete folder
and uses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

try:
    import resource
except ImportError:  # Windows has no `resource`: preparing data works there, only the peak-RSS figures are skipped
    resource = None  # type: ignore[assignment]

from recstack.data.clean import CleanConfig, CleanReport, clean
from recstack.data.idmap import (
    Encoded,
    drop_unused_ids,
    encode,
    index_in_pair_order,
    items_table,
    recompact,
    users_table,
)
from recstack.data.prepared import FORMAT_VERSION, PreparedSplit, is_complete, write_manifest, write_tables
from recstack.data.schema import DataError, Dataset
from recstack.data.sources.registry import source_snapshot
from recstack.data.split import (
    DROPPED,
    TEST,
    TRAIN,
    VALID,
    SplitConfig,
    group_pairs,
    row_stages,
    rows_in_order,
    split_pairs,
)

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, int], ...] = (("train", TRAIN), ("valid", VALID), ("test", TEST))
EMBEDDED = "duckdb"  # the default engine's name (configs/engine/duckdb.yaml): numpy, Arrow and DuckDB in process
PROGRESS_MIN_ROWS = 500_000  # below this the whole run takes about a second: a bar would only be noise


@dataclass(frozen=True)
class SplitSpec:
    """What :func:`prepare` builds, as plain typed values.

    ``load`` reads the source (called only when the folder has to be built). ``data_config`` and ``split_config`` are
    the plain config the spec came from (``configs/data/*.yaml``, ``configs/split/*.yaml``): the folder hash covers
    them and the manifest records them, so a split is named by its configuration. Build a spec with
    :meth:`from_config` so that ``clean`` and ``split`` are parsed from exactly that config.
    """

    name: str
    load: Callable[[], Dataset] = field(compare=False)
    clean: CleanConfig
    split: SplitConfig
    data_config: Mapping[str, Any]
    split_config: Mapping[str, Any]

    @classmethod
    def from_config(
        cls, data_config: Mapping[str, Any], split_config: Mapping[str, Any], load: Callable[[], Dataset]
    ) -> SplitSpec:
        data, split = json.loads(json.dumps(data_config, default=str)), dict(split_config)
        snapshot = source_snapshot(data.get("source"))
        if snapshot is not None:  # a growing source (the event lake): what it holds now names the split, once per spec
            data["snapshot"] = snapshot
        return cls(
            name=str(data.get("name", "dataset")),
            load=load,
            clean=CleanConfig.from_mapping(data.get("clean")),
            split=SplitConfig.from_mapping(split),
            data_config=data,
            split_config=split,
        )

    @property
    def config_hash(self) -> str:
        return config_hash(self.data_config, self.split_config)


class SplitSummary(Protocol):
    """What the manifest says about a built split (a :class:`BuiltSplit`, or an engine's split it wrote itself)."""

    source: str
    n_users: int
    n_items: int
    n_pairs: int
    clean_report: CleanReport
    dropped_users: int
    dropped_interactions: int

    def counts(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class SplitCounts:
    """What cleaning and splitting kept and dropped, beside the stage tables (every engine reports these)."""

    clean_report: CleanReport
    n_pairs: int
    dropped_users: int
    dropped_interactions: int


@dataclass(frozen=True)
class BuiltSplit:
    """A prepared split in memory, before it is written."""

    dataset: str
    source: str
    train: pa.Table
    valid: pa.Table
    test: pa.Table
    items: pd.DataFrame
    users: pd.DataFrame
    clean_report: CleanReport
    n_pairs: int
    dropped_users: int
    dropped_interactions: int

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        return {"train": self.train.num_rows, "valid": self.valid.num_rows, "test": self.test.num_rows}


class _Steps:
    """Times each step and logs it; a bar over the steps once :meth:`show_bar` is called (large data only)."""

    def __init__(self, total: int) -> None:
        self.timing: dict[str, float] = {}
        self.peak_rss_mib: dict[str, float] = {}  # process peak so far, after each step (Unix only)
        self._total = total
        self._bar: tqdm | None = None

    def show_bar(self) -> None:
        self._bar = tqdm(total=self._total, initial=len(self.timing), desc="prepare", unit="step", leave=False)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.timing[name] = round(time.perf_counter() - start, 4)
        if resource is not None:
            self.peak_rss_mib[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        log.debug("prepare: %s took %.2f s", name, self.timing[name])
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


STAGE_SCHEMA = pa.schema(
    [
        # large_string is what pandas' str dtype holds, so to_pandas() later shares the buffers instead of copying
        ("user_id", pa.large_string()),
        ("item_id", pa.large_string()),
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
        ("timestamp", pa.int64()),
        ("value", pa.float32()),
        ("event_type", pa.large_string()),
    ]
)
"""The columns of a stage table (``train``/``valid``/``test.parquet``), whichever engine builds it."""


def stage_table(
    user_ids: pa.Array,
    item_ids: pa.Array,
    user_idx: pa.Array,
    item_idx: pa.Array,
    timestamp: pa.Array,
    value: pa.Array,
    event_type: pa.Array,
) -> pa.Table:
    """One stage's rows as :data:`STAGE_SCHEMA`: the raw ids looked up by the rows' final indices in the id arrays
    (``user_ids``/``item_ids``, in index order), every column cast to its type."""
    columns = (user_ids.take(user_idx), item_ids.take(item_idx), user_idx, item_idx, timestamp, value, event_type)
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, STAGE_SCHEMA)], schema=STAGE_SCHEMA)


def finish_split(
    tables: Mapping[str, pa.Table],
    user_ids: pa.Array,
    item_ids: pa.Array,
    user_meta: pd.DataFrame,
    item_meta: pd.DataFrame,
    summary: SplitCounts,
    *,
    name: str,
    source: str,
) -> BuiltSplit:
    """The :class:`BuiltSplit` of an engine's stage tables: the users and items tables from the final id arrays and
    the source's metadata, the counts from ``summary``."""
    return BuiltSplit(
        dataset=name,
        source=source,
        train=tables["train"],
        valid=tables["valid"],
        test=tables["test"],
        items=items_table(item_ids, item_meta),
        users=users_table(user_ids, user_meta),
        clean_report=summary.clean_report,
        n_pairs=summary.n_pairs,
        dropped_users=summary.dropped_users,
        dropped_interactions=summary.dropped_interactions,
    )


def build_split(
    dataset: Dataset, clean_cfg: CleanConfig, split_cfg: SplitConfig, *, steps: _Steps | None = None
) -> BuiltSplit:
    """Clean, index and split a dataset in memory (pure: no files, randomness only from ``split_cfg.seed``)."""
    steps = steps or _Steps(total=0)
    with steps.step("encode"):
        enc = encode(dataset)
    with steps.step("index"):
        enc = index_in_pair_order(enc)
    return split_indexed(
        enc, dataset.items, dataset.users, clean_cfg, split_cfg, name=dataset.name, source=dataset.source, steps=steps
    )


def split_indexed(
    enc: Encoded,
    item_meta: pd.DataFrame,
    user_meta: pd.DataFrame,
    clean_cfg: CleanConfig,
    split_cfg: SplitConfig,
    *,
    name: str,
    source: str,
    steps: _Steps | None = None,
) -> BuiltSplit:
    """:func:`build_split` after encoding: takes the pair-ordered codes, so callers can free the raw frames first."""
    steps = steps or _Steps(total=0)
    with steps.step("clean"):
        enc, report = clean(enc, clean_cfg, dataset=name)
        enc = drop_unused_ids(enc)
    with steps.step("split"):
        pairs = group_pairs(
            enc.user,
            enc.item,
            enc.timestamp,
            len(enc.item_ids),
            row=enc.row,
            with_time=split_cfg.name not in ("random", "new_items"),
            with_item=split_cfg.name == "new_items",
        )
        result = split_pairs(pairs, len(enc.user_ids), split_cfg)
        rows = rows_in_order(pairs, result.pair_order)  # None: the rows' own order
        row_stage = row_stages(pairs, result)
        del pairs
    user_idx, item_idx, user_ids, item_ids = enc.user, enc.item, enc.user_ids, enc.item_ids
    dropped_rows = int((row_stage == DROPPED).sum())
    n_pairs = int((result.pair_stage != DROPPED).sum())
    if dropped_rows:
        # Only the time and new_items splits drop (users without training data); keep indices contiguous, order
        # unchanged. new_items never drops everyone: the warm items' pairs always leave some user a training pair.
        kept = row_stage != DROPPED
        rows = np.flatnonzero(kept) if rows is None else rows[kept]
        row_stage = row_stage[kept]
        if len(rows) == 0:
            raise no_training_data(name, split_cfg)
        lookup, user_ids = recompact(user_idx[rows], user_ids)
        user_idx = lookup[user_idx]
        lookup, item_ids = recompact(item_idx[rows], item_ids)
        item_idx = lookup[item_idx]
    with steps.step("tables"):
        # the id arrays as STAGE_SCHEMA types them: one cast here instead of one per stage after the take
        user_ids = user_ids.cast(pa.large_string())
        item_ids = item_ids.cast(pa.large_string())
        event_types = enc.event_types.cast(pa.large_string())
        tables = {}
        for stage, code in STAGES:
            selected = np.flatnonzero(row_stage == code)
            chosen = selected if rows is None else rows[selected]
            columns = (user_idx[chosen], item_idx[chosen], enc.timestamp[chosen], enc.value[chosen])
            event_type = event_types.take(pa.array(enc.event[chosen]))
            tables[stage] = stage_table(user_ids, item_ids, *(pa.array(c) for c in columns), event_type)
        counts = SplitCounts(report, n_pairs, result.dropped_users, dropped_rows)
        return finish_split(tables, user_ids, item_ids, user_meta, item_meta, counts, name=name, source=source)


def no_training_data(name: str, split_cfg: SplitConfig) -> DataError:
    """The split dropped every user (none had a training pair)."""
    return DataError(
        f"{name}: split=time with valid_start={split_cfg.valid_start} left no user with "
        "training data; move valid_start later"
    )


# Bump whenever a cleaning or splitting algorithm changes its output for the same config: the hash must name one
# split, or a cached folder and a fresh preparation would differ under the same name.
ALGORITHM_VERSION = 2
DEFAULT_ROOT = Path("data/processed")


def hashed_config(data: Mapping[str, Any], split: Mapping[str, Any]) -> dict[str, Any]:
    """What the folder hash covers: format and algorithm versions, data config minus ``source.data_home`` (a
    location) and ``source.memory_budget_gib`` (a limit), split."""
    data = json.loads(json.dumps(data, default=str))
    if isinstance(data.get("source"), dict):
        data["source"].pop("data_home", None)
        data["source"].pop("memory_budget_gib", None)
    return {"format_version": FORMAT_VERSION, "algorithm_version": ALGORITHM_VERSION, "data": data, "split": split}


def config_hash(data: Mapping[str, Any], split: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of :func:`hashed_config`."""
    canonical = json.dumps(hashed_config(data, dict(split)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _source_files(source: str) -> list[dict[str, Any]]:
    """Sizes and mtimes of the source's files: a folder's files, or a file and its siblings of the same stem."""
    scheme = re.match(r"^[A-Za-z][\w-]+:", source)  # "atomic:/x/ml-100k.inter", "event-log:/x/e.csv"
    path = Path(source[scheme.end() :] if scheme else source)
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            stem = path.name.split(".")[0]
            files = sorted(p for p in path.parent.iterdir() if p.is_file() and p.name.split(".")[0] == stem)
        else:
            files = []
        out = []
        for p in files:
            st = p.stat()
            mtime = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")
            out.append({"path": str(p), "bytes": st.st_size, "mtime": mtime})
        return out
    except OSError:
        return []


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "dataset"


def split_root(spec: SplitSpec, out_root: str | Path = DEFAULT_ROOT) -> Path:
    """Where ``prepare(spec, out_root=...)`` writes (or finds) the folder, without preparing anything."""
    return Path(out_root) / _safe_name(spec.name) / spec.config_hash


def load_source(spec: SplitSpec) -> Dataset:
    """``spec.load()``, checked to be a :class:`~recstack.data.schema.Dataset`."""
    dataset = spec.load()
    if not isinstance(dataset, Dataset):
        raise TypeError(f"data.source returned {type(dataset).__name__}, expected recstack.data.schema.Dataset")
    return dataset


def _install(tmp: Path, root: Path, replace: bool) -> bool:
    """Rename the finished ``tmp`` into place; False if an identical run got there first (its folder is kept)."""
    old = None
    if replace and root.exists():
        old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(root, old)
    try:
        os.rename(tmp, root)
        return True
    except OSError:
        if not is_complete(root):
            raise
        log.info("prepare: %s was completed by another process meanwhile; using it", root)
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class PrepareEngine(Protocol):
    """Another engine for the per-row work of :func:`prepare` (``engine=spark``: :mod:`recstack.data.spark_engine`).
    It must build exactly what the embedded path builds; the folder, its hash and the writer stay shared."""

    name: str

    def build(self, spec: SplitSpec, steps: _Steps) -> BuiltSplit:
        """Load ``spec``'s source (:func:`load_source`, or the engine's own reader) and clean, index and split it."""


def _build_embedded(spec: SplitSpec, steps: _Steps, progress: bool) -> BuiltSplit:
    with steps.step("load"):
        dataset = load_source(spec)
    if progress and len(dataset.interactions) >= PROGRESS_MIN_ROWS:
        steps.show_bar()
    with steps.step("encode"):
        enc = encode(dataset)
    meta = {"item_meta": dataset.items, "user_meta": dataset.users, "name": dataset.name, "source": dataset.source}
    del dataset  # the raw string frames are the largest objects at 20M rows: free them before the heavy steps
    with steps.step("index"):
        enc = index_in_pair_order(enc)
    return split_indexed(enc, clean_cfg=spec.clean, split_cfg=spec.split, steps=steps, **meta)


def prepare(
    spec: SplitSpec,
    *,
    out_root: str | Path = DEFAULT_ROOT,
    force: bool = False,
    progress: bool = True,
    engine: PrepareEngine | None = None,
) -> PreparedSplit:
    """Prepare (or reuse) the split ``spec`` describes under ``out_root``; see the module docstring.

    ``engine``: None for the embedded numpy/DuckDB path, else an engine that builds the same split elsewhere (the
    folder is named by the config alone, so a folder either engine wrote is reused by both).
    """
    root = split_root(spec, out_root)
    if not force and is_complete(root):
        log.info("prepare: reusing %s", root)
        return PreparedSplit.load(root)
    started = time.perf_counter()
    steps = _Steps(total=7)
    try:
        built = _build_embedded(spec, steps, progress) if engine is None else engine.build(spec, steps)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the folder is shared data
            with steps.step("write"):
                write_tables(
                    tmp, train=built.train, valid=built.valid, test=built.test, items=built.items, users=built.users
                )
            manifest = _manifest(spec, built, steps.timing, started, steps.peak_rss_mib)
            manifest = write_manifest(tmp, {**manifest, "engine": EMBEDDED if engine is None else engine.name})
            ours = _install(tmp, root, replace=root.exists())
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        steps.close()
    log.info("prepare: wrote %s in %.1f s", root, time.perf_counter() - started)
    if not ours:
        return PreparedSplit.load(root)
    # Converting the tables in memory is ~4x faster than reading the Parquet back (20M rows: 1.5 s vs 6 s).
    return PreparedSplit(
        root=root,
        manifest=manifest,
        train=built.train.to_pandas(),
        valid=built.valid.to_pandas(),
        test=built.test.to_pandas(),
        items=pd.read_parquet(root / "items.parquet"),  # small; read back so list columns match what load() gives
        users=pd.read_parquet(root / "users.parquet"),
    )


def _manifest(
    spec: SplitSpec,
    built: SplitSummary,
    timing: dict[str, float],
    started: float,
    peak_rss: dict[str, float],
) -> dict[str, Any]:
    counts = built.counts()
    n_interactions = sum(counts.values())
    cells = built.n_users * built.n_items
    return {
        "dataset": spec.name,
        "source": built.source,
        "source_files": _source_files(built.source),
        "config": {"data": spec.data_config, "split": spec.split_config},
        "config_hash": spec.config_hash,
        "n_users": built.n_users,
        "n_items": built.n_items,
        "n_interactions": n_interactions,
        "n_pairs": built.n_pairs,
        "counts": counts,
        "sparsity": 1.0 - built.n_pairs / cells if cells else 1.0,
        "cleaning": asdict(built.clean_report),
        "dropped": {"users_without_train": built.dropped_users, "interactions": built.dropped_interactions},
        "id_order": "sorted raw id (numeric when every id is an integer, else lexicographic)",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timing_s": {**timing, "total": round(time.perf_counter() - started, 4)},
        "peak_rss_mib": peak_rss,
    }
