"""export's ``seen`` option: what a bundle's seen-items lists hold (train, train + valid, or every interaction), with
erased users' rows still emptied, and ``all`` as the configured default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recstack.bundle.reader import Bundle
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import Erasures
from recstack.export.exporter import ExportError, export_run, seen_matrix
from recstack.retrieval.index import IndexConfig


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> PreparedSplit:
    return PreparedSplit.load(tiny_split_writer(tmp_path_factory.mktemp("split") / "tiny"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, split: PreparedSplit) -> Path:
    from recstack.training.train import train

    root = tmp_path_factory.mktemp("run")
    cfg = compose(
        "train",
        ["model=mf", "fit.max_epochs=1", "logger=none", "progress=false", f"run_dir={root / 'mf'}",
         f"text_cache_dir={root / 'text-cache'}"],
    )  # fmt: skip
    return train(cfg, split=split).run_dir


def items_of(matrix, user: int) -> set[int]:  # type: ignore[no-untyped-def]
    return set(matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]].tolist())


def test_seen_matrix_holds_the_chosen_stages(split: PreparedSplit) -> None:
    train, valid, test = (split.matrix(s) for s in ("train", "valid", "test"))
    for user in range(split.n_users):
        assert items_of(seen_matrix(split, "train"), user) == items_of(train, user)
        assert items_of(seen_matrix(split, "train_valid"), user) == items_of(train, user) | items_of(valid, user)
        assert items_of(seen_matrix(split, "all"), user) == items_of(train, user) | items_of(valid, user) | items_of(
            test, user
        )
    assert set(np.unique(seen_matrix(split, "all").data)) == {1.0}
    with pytest.raises(ExportError, match="choose one of train, train_valid, all"):
        seen_matrix(split, "everything")


@pytest.mark.slow
def test_the_bundle_seen_rows_hold_valid_and_test_items_with_all(
    run: Path, split: PreparedSplit, tmp_path: Path, pseudonymisation_key: str
) -> None:
    erased = Erasures(frozenset({"u3"}), pseudonymisation_key.encode())
    bundles = {
        seen: Bundle.load(
            export_run(
                run, tmp_path / seen, index_config=IndexConfig(kind="flat"), text=False, seen=seen, erasures=erased
            )
        )
        for seen in ("train", "train_valid", "all")
    }
    valid, test = split.matrix("valid"), split.matrix("test")
    for user in (0, 7, 29):
        row = set(bundles["all"].seen_items(user).tolist())
        assert items_of(valid, user) <= row and items_of(test, user) <= row
        assert not items_of(test, user) & set(bundles["train_valid"].seen_items(user).tolist())
        assert not items_of(valid, user) & set(bundles["train"].seen_items(user).tolist())
    assert [b.seen.nnz for b in bundles.values()] == [240 - 8, 270 - 9, 300 - 10]  # u3's row emptied in each
    assert all(len(b.seen_items(3)) == 0 and "u3" not in b.user_index for b in bundles.values())
    assert {s: b.manifest.metrics["export"]["seen"] for s, b in bundles.items()} == {s: s for s in bundles}


def test_all_is_the_configured_default_and_the_cli_passes_it_on() -> None:
    assert compose("export", ["run=x"]).seen == "all"
    assert compose("export", ["run=x", "seen=train_valid"]).seen == "train_valid"


def test_an_unknown_value_is_refused_before_the_run_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="seen='last_week'"):
        export_run(tmp_path / "no-such-run", tmp_path / "b", index_config=IndexConfig(), seen="last_week")  # type: ignore[arg-type]
