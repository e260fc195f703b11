"""Source -> cleaned, indexed, split Parquet folder: ``prepare(cfg)`` and ``prepare_named("ml100k", "random")``.

The folder is ``<processed_root>/<dataset>/<config-hash>/`` (layout in :mod:`recstack.data.prepared`). The hash
covers the resolved ``data`` and ``split`` config minus ``data.source.data_home`` (a location, not content), so the
same config reuses the folder without recomputing, and any change of content gets a new folder. Source files are
not hashed (that would read gigabytes per call); their sizes and mtimes are recorded in the manifest instead.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from recstack.data.clean import CleanConfig, CleanReport, clean
from recstack.data.idmap import compact, encode, items_table, recompact, users_table
from recstack.data.prepared import FORMAT_VERSION, PreparedSplit, is_complete, write_prepared
from recstack.data.schema import DataError, Dataset
from recstack.data.split import DROPPED, TEST, TRAIN, VALID, SplitConfig, group_pairs, rows_in_order, split_pairs

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, int], ...] = (("train", TRAIN), ("valid", VALID), ("test", TEST))
PROGRESS_MIN_ROWS = 500_000  # below this the whole run takes about a second: a bar would only be noise


@dataclass(frozen=True)
class BuiltSplit:
    """A prepared split in memory, before it is written."""

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
    """Times each step; shows a bar over the steps for large data and logs one line per step."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.timing: dict[str, float] = {}
        self._bar = tqdm(total=total, desc="prepare", unit="step", disable=not enabled, leave=False)

    def enable(self, enabled: bool) -> None:
        self._bar.disable = not enabled

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.timing[name] = round(time.perf_counter() - start, 4)
        log.debug("prepare: %s took %.2f s", name, self.timing[name])
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _stage_table(
    rows: np.ndarray,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    enc_timestamp: np.ndarray,
    enc_value: np.ndarray,
    enc_event: np.ndarray,
    user_ids: pa.Array,
    item_ids: pa.Array,
    event_types: pa.Array,
) -> pa.Table:
    u = user_idx[rows]
    i = item_idx[rows]
    return pa.table(
        {
            "user_id": user_ids.take(pa.array(u)),
            "item_id": item_ids.take(pa.array(i)),
            "user_idx": pa.array(u, type=pa.int32()),
            "item_idx": pa.array(i, type=pa.int32()),
            "timestamp": pa.array(enc_timestamp[rows], type=pa.int64()),
            "value": pa.array(enc_value[rows], type=pa.float32()),
            "event_type": event_types.take(pa.array(enc_event[rows])),
        }
    )


def build_split(
    dataset: Dataset, clean_cfg: CleanConfig, split_cfg: SplitConfig, *, steps: _Steps | None = None
) -> BuiltSplit:
    """Clean, index and split a dataset in memory (pure: no files, randomness only from ``split_cfg.seed``)."""
    steps = steps or _Steps(total=0, enabled=False)
    with steps.step("encode"):
        enc = encode(dataset)
    with steps.step("clean"):
        enc, report = clean(enc, clean_cfg, dataset=dataset.name)
    with steps.step("index"):
        user_lookup, user_ids = compact(enc.user, enc.user_ids)
        item_lookup, item_ids = compact(enc.item, enc.item_ids)
        user_idx = user_lookup[enc.user]
        item_idx = item_lookup[enc.item]
    with steps.step("split"):
        pairs = group_pairs(user_idx, item_idx, enc.timestamp, len(item_ids))
        result = split_pairs(pairs, len(user_ids), split_cfg)
        rows = rows_in_order(pairs, result.pair_order)
        row_stage = np.repeat(result.pair_stage[result.pair_order], pairs.n_rows[result.pair_order])
    dropped_rows = int((row_stage == DROPPED).sum())
    n_pairs = int((result.pair_stage != DROPPED).sum())
    if dropped_rows:
        # Only the time split drops (users without training data); keep indices contiguous, order unchanged.
        kept = row_stage != DROPPED
        rows, row_stage = rows[kept], row_stage[kept]
        lookup, user_ids = recompact(user_idx[rows], user_ids)
        user_idx = lookup[user_idx]
        lookup, item_ids = recompact(item_idx[rows], item_ids)
        item_idx = lookup[item_idx]
        if len(rows) == 0:
            raise DataError(
                f"{dataset.name}: split=time with valid_start={split_cfg.valid_start} left no user with "
                "training data; move valid_start later"
            )
    with steps.step("tables"):
        user_ids = user_ids.cast(pa.string())
        item_ids = item_ids.cast(pa.string())
        event_types = enc.event_types.cast(pa.string())
        tables = {
            name: _stage_table(
                rows[row_stage == code],
                user_idx,
                item_idx,
                enc.timestamp,
                enc.value,
                enc.event,
                user_ids,
                item_ids,
                event_types,
            )
            for name, code in STAGES
        }
        items = items_table(item_ids, dataset.items)
        users = users_table(user_ids, dataset.users)
    return BuiltSplit(
        **tables,
        items=items,
        users=users,
        clean_report=report,
        n_pairs=n_pairs,
        dropped_users=result.dropped_users,
        dropped_interactions=dropped_rows,
    )


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def hashed_config(data: dict[str, Any], split: dict[str, Any]) -> dict[str, Any]:
    """What the folder hash covers: format version, data config minus ``source.data_home``, split config."""
    data = json.loads(json.dumps(data, default=str))
    if isinstance(data.get("source"), dict):
        data["source"].pop("data_home", None)
    return {"format_version": FORMAT_VERSION, "data": data, "split": split}


def config_hash(data: dict[str, Any], split: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of :func:`hashed_config`."""
    canonical = json.dumps(hashed_config(data, split), sort_keys=True, separators=(",", ":"), default=str)
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


def split_root(cfg: DictConfig, out_root: str | Path | None = None) -> Path:
    """Where ``prepare(cfg)`` writes (or finds) the folder, without preparing anything."""
    if "data" not in cfg or "split" not in cfg:
        raise ValueError("prepare needs a config with `data` and `split` groups (compose configs/prepare.yaml)")
    base = Path(out_root if out_root is not None else cfg.get("processed_root", None) or "data/processed")
    data, split = _plain(cfg.data), _plain(cfg.split)
    return base / _safe_name(str(data.get("name", "dataset"))) / config_hash(data, split)


def _load_source(cfg: DictConfig) -> Dataset:
    from hydra.utils import instantiate

    if "source" not in cfg.data:
        raise ValueError(
            "data.source is missing: it must name a loader, e.g. _target_: recstack.data.sources.load_dataset"
        )
    dataset = instantiate(cfg.data.source, _convert_="all")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"data.source returned {type(dataset).__name__}, expected recstack.data.schema.Dataset")
    return dataset


def _install(tmp: Path, root: Path, replace: bool) -> None:
    """Rename the finished ``tmp`` into place. Losing a race to an identical run is fine: keep the winner's."""
    old = None
    if replace and root.exists():
        old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(root, old)
    try:
        os.rename(tmp, root)
    except OSError:
        if not is_complete(root):
            raise
        log.info("prepare: %s was completed by another process meanwhile; using it", root)
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def prepare(
    cfg: DictConfig, *, out_root: str | Path | None = None, force: bool = False, progress: bool = True
) -> PreparedSplit:
    """Prepare (or reuse) the split that ``cfg.data`` + ``cfg.split`` describe; see the module docstring."""
    root = split_root(cfg, out_root)
    if not force and is_complete(root):
        log.info("prepare: reusing %s", root)
        return PreparedSplit.load(root)
    data, split = _plain(cfg.data), _plain(cfg.split)
    clean_cfg = CleanConfig.from_mapping(data.get("clean"))
    split_cfg = SplitConfig.from_mapping(split)
    started = time.perf_counter()
    steps = _Steps(total=7, enabled=False)
    try:
        with steps.step("load"):
            dataset = _load_source(cfg)
        steps.enable(progress and len(dataset.interactions) >= PROGRESS_MIN_ROWS)
        built = build_split(dataset, clean_cfg, split_cfg, steps=steps)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            with steps.step("write"):
                os.chmod(tmp, 0o755)  # mkdtemp makes it private; the folder is shared data
                write_prepared(
                    tmp,
                    train=built.train,
                    valid=built.valid,
                    test=built.test,
                    items=built.items,
                    users=built.users,
                    manifest=_manifest(cfg, data, split, dataset, built, steps.timing, started),
                )
            _install(tmp, root, replace=root.exists())
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        steps.close()
    log.info("prepare: wrote %s in %.1f s", root, time.perf_counter() - started)
    return PreparedSplit.load(root)


def _manifest(
    cfg: DictConfig,
    data: dict[str, Any],
    split: dict[str, Any],
    dataset: Dataset,
    built: BuiltSplit,
    timing: dict[str, float],
    started: float,
) -> dict[str, Any]:
    counts = built.counts()
    n_interactions = sum(counts.values())
    cells = built.n_users * built.n_items
    return {
        "dataset": str(data.get("name", dataset.name)),
        "source": dataset.source,
        "source_files": _source_files(dataset.source),
        "config": {"data": data, "split": split},
        "config_hash": config_hash(data, split),
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
    }


def prepare_named(
    data: str = "ml100k",
    split: str = "random",
    overrides: Sequence[str] = (),
    out_root: str | Path | None = None,
    force: bool = False,
) -> PreparedSplit:
    """Compose ``configs/prepare.yaml`` with ``data=<data> split=<split> *overrides`` and :func:`prepare` it."""
    from recstack.config import compose

    cfg = compose("prepare", [f"data={data}", f"split={split}", *overrides])
    return prepare(cfg, out_root=out_root, force=force or bool(cfg.get("force", False)))
