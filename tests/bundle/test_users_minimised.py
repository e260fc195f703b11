"""``users.parquet`` holds only what serving needs: the ids and the demographic columns the segment fallback can use
(never a zip code), and no row for a user erased at export (their index is a hole the reader accepts and checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recstack.bundle.layout import MANIFEST, MAX_SEGMENT_VALUES, USERS, BundleError, segment_columns
from recstack.bundle.manifest import DIGEST_KEY, BundleManifest, content_digest
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import write_bundle
from recstack.serving.fallbacks import PopularityFallback

N_USERS, N_ITEMS, DIM = 120, 30, 4
# ML-1M's users.dat codes, as recstack.data.sources.movielens labels them
AGES = ["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
OCCUPATIONS = [f"occupation {i}" for i in range(21)]


def movielens_users(n: int = N_USERS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_idx": np.arange(n, dtype=np.int32),
            "user_id": [str(u + 1) for u in range(n)],
            "gender": ["F" if u % 3 else "M" for u in range(n)],
            "age": [AGES[u % len(AGES)] for u in range(n)],
            "occupation": [OCCUPATIONS[u % len(OCCUPATIONS)] for u in range(n)],
            "zip_code": [f"{90210 + 7 * u:05d}" for u in range(n)],
        }
    )


def inputs(users: pd.DataFrame, n_users: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_users = len(users) if n_users is None else n_users
    seen = sp.random(n_users, N_ITEMS, density=0.2, format="csr", random_state=seed)
    items = pd.DataFrame(
        {
            "item_idx": np.arange(N_ITEMS, dtype=np.int32),
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "title": [f"movie {i}" for i in range(N_ITEMS)],
            "year": pd.array([2000] * N_ITEMS, dtype="Int64"),
            "categories": [["Drama"] for _ in range(N_ITEMS)],
            "popularity": np.asarray(seen.sum(axis=0)).ravel().astype(np.int64),
        }
    )
    return dict(
        model_kind="mf",
        users=users,
        items=items,
        user_embeddings=rng.standard_normal((n_users, DIM)).astype(np.float32),
        item_embeddings=rng.standard_normal((N_ITEMS, DIM)).astype(np.float32),
        seen=seen,
        index_config={"kind": "flat"},
    )


def test_movielens_users_keep_demographics_but_not_zip_codes(tmp_path: Path) -> None:
    users = movielens_users()
    before = users.copy()
    bundle = Bundle.load(write_bundle(tmp_path / "b", **inputs(users)))
    stored = pd.read_parquet(tmp_path / "b" / USERS)
    assert list(stored.columns) == ["user_idx", "user_id", "gender", "age", "occupation"]
    assert list(bundle.users.columns) == list(stored.columns)
    pd.testing.assert_frame_equal(users, before)  # the caller's frame is not touched
    assert b"zip_code" not in (tmp_path / "b" / USERS).read_bytes()  # not even in the file's schema metadata
    decoded = stored.to_csv()
    assert not [z for z in users["zip_code"] if z in decoded]
    # What is kept is what the popularity-by-segment fallback uses
    fallback = PopularityFallback.build(bundle.items["popularity"].to_numpy(), bundle.seen, bundle.users, min_users=1)
    assert {column for column, _ in fallback.segments} == {"gender", "age", "occupation"}


def test_the_limit_is_the_fallbacks_limit() -> None:
    users = movielens_users(400)
    users["at_limit"] = [f"v{u % MAX_SEGMENT_VALUES}" for u in range(400)]
    users["over_limit"] = [f"v{u % (MAX_SEGMENT_VALUES + 1)}" for u in range(400)]
    users["mostly_missing"] = pd.array([None] * 399 + ["x"], dtype="string")  # None counts as one value, as there
    kept = segment_columns(users)
    assert kept == ["gender", "age", "occupation", "at_limit", "mostly_missing"]
    seen = sp.csr_matrix(np.ones((400, 5), dtype=np.float32))
    fallback = PopularityFallback.build(np.ones(5), seen, users, min_users=1)
    assert {column for column, _ in fallback.segments} == set(kept)


def erased_inputs(erased: list[int]) -> dict:
    users = movielens_users()
    args = inputs(users.loc[~users["user_idx"].isin(erased)].reset_index(drop=True), n_users=N_USERS)
    args["user_embeddings"][erased] = 0.0
    keep = np.ones(N_USERS)
    keep[erased] = 0.0
    args["seen"] = sp.csr_matrix(sp.diags(keep) @ args["seen"])
    args["seen"].eliminate_zeros()
    return args | {"erased_users": len(erased)}


def test_erased_users_are_holes_the_reader_accepts(tmp_path: Path) -> None:
    bundle = Bundle.load(write_bundle(tmp_path / "b", **erased_inputs([0, 7, N_USERS - 1])))
    m = bundle.manifest
    assert (m.n_users, m.erased_users, len(bundle.users)) == (N_USERS, 3, N_USERS - 3)
    assert bundle.user_embeddings.shape == (N_USERS, DIM) and bundle.seen.shape == (N_USERS, N_ITEMS)
    assert "1" not in bundle.user_index and "8" not in bundle.user_index and bundle.user_index["2"] == 1
    assert not bundle.user_embeddings[[0, 7, N_USERS - 1]].any() and len(bundle.seen_items(7)) == 0


def test_writer_refuses_holes_that_still_carry_data(tmp_path: Path) -> None:
    args = erased_inputs([7])
    with pytest.raises(BundleError, match="119 rows, expected 120"):
        write_bundle(tmp_path / "b", **(args | {"erased_users": 0}))
    vectors = args["user_embeddings"].copy()
    vectors[7] = 1.0
    with pytest.raises(BundleError, match="user_embeddings: rows of users absent"):
        write_bundle(tmp_path / "b", **(args | {"user_embeddings": vectors}))
    with pytest.raises(BundleError, match="seen: rows of users absent"):
        write_bundle(tmp_path / "b", **(args | {"seen": inputs(movielens_users())["seen"]}))
    twice = pd.concat([args["users"], args["users"].iloc[:1]], ignore_index=True)
    with pytest.raises(BundleError, match="unique, ascending"):
        write_bundle(tmp_path / "b", **(args | {"users": twice, "erased_users": 0}))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(user_idx=f["user_idx"].where(f["user_idx"] != 8, 9)), "unique, ascending"),
        (lambda f: f.assign(user_idx=f["user_idx"].where(f["user_idx"] != N_USERS - 2, N_USERS)), "within 0..119"),
        (lambda f: f.iloc[1:], "118 rows, expected 119"),
        (lambda f: f.assign(user_id=f["user_id"].where(f["user_idx"] != 9, "9")), "user_id has duplicates"),
    ],
)
def test_reader_checks_user_indices(tmp_path: Path, edit, message: str) -> None:
    path = write_bundle(tmp_path / "b", **erased_inputs([7]))
    edit(pd.read_parquet(path / USERS)).to_parquet(path / USERS, index=False)
    with pytest.raises(BundleError, match=message):
        Bundle.load(path, verify=False)  # a consistent manifest could not save it either: the checks are structural


def test_manifest_without_erased_users_reads_as_none_erased(tmp_path: Path) -> None:
    raw = json.loads((write_bundle(tmp_path / "b", **inputs(movielens_users())) / MANIFEST).read_text())
    body = {k: v for k, v in raw.items() if k not in (DIGEST_KEY, "erased_users")}
    assert BundleManifest.from_json(json.dumps({**body, DIGEST_KEY: content_digest(body)})).erased_users == 0
    bad = {**body, "erased_users": -1}
    with pytest.raises(BundleError, match="erased_users must be a count"):
        BundleManifest.from_json(json.dumps({**bad, DIGEST_KEY: content_digest(bad)}))
