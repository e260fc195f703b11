"""Erasure reaches trained artifacts: ``recstack-export`` reads who has been erased (lake audit + Redis tombstones),
leaves them out of every part of the bundle (id map, vectors, seen items, the ranker's per-user rows) without moving
anyone else, and refuses a bundle that would still hold one. Real lakes (data.lake.write_rows), real Redis (a key
prefix of the test's own), real trained runs and ONNX files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import redis
from bundle_support import export_tiny_ranker, random_bundle_args, train_tiny
from onnx import helper, numpy_helper
from redis_support import delete_keys

from recstack.bundle.layout import USERS
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import write_bundle
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.records import StreamNames, tombstone_key
from recstack.config import compose
from recstack.data import lake as lake_io
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import (
    ErasureError,
    Erasures,
    check_no_erased_users,
    erased_subjects,
    redact_users,
    zero_ranker_users,
)
from recstack.retrieval.index import IndexConfig
from recstack.serving.pipeline import Pipeline, Query

REDIS_URL = "redis://127.0.0.1:6379/0"
NOW_MS = 1_796_000_000_000  # 2026-11-30


@pytest.fixture
def names() -> Iterator[StreamNames]:
    """A stream name of the test's own on the shared Redis; every key under it (the tombstone set) is deleted
    afterwards."""
    names = StreamNames(stream=f"recstack-test:{uuid.uuid4().hex[:10]}:collect")
    yield names
    delete_keys(names.stream)


@pytest.fixture
def key(pseudonymisation_key: str) -> bytes:
    return pseudonymisation_key.encode()


def audit_lake(root: Path, *subjects: str) -> Path:
    """A lake whose audit table records these erasures, besides rows that are not erasures."""
    rows = [{"action": "erasure", "subject": s, "detail": "[]", "received_ts": NOW_MS} for s in subjects]
    rows += [
        {"action": "consent", "subject": "c" * 32, "purposes": "{}", "policy_version": "1", "received_ts": NOW_MS},
        {"action": "purge", "detail": "[]", "received_ts": NOW_MS},
    ]
    lake_io.write_rows(root, "audit", rows)
    return root


@pytest.mark.redis
def test_erased_subjects_unite_lake_audit_and_redis_tombstones(
    tmp_path: Path, names: StreamNames, caplog: pytest.LogCaptureFixture
) -> None:
    lake = audit_lake(tmp_path / "lake", "a" * 32, "b" * 32)
    redis.Redis.from_url(REDIS_URL).sadd(tombstone_key(names), "b" * 32, "d" * 32)
    assert erased_subjects(lake, REDIS_URL, names) == {"a" * 32, "b" * 32, "d" * 32}
    assert erased_subjects(tmp_path / "no-lake-yet", REDIS_URL, names) == {"b" * 32, "d" * 32}
    assert erased_subjects(None, REDIS_URL, StreamNames(stream=f"{names.stream}-other")) == frozenset()
    # Redis unreachable or not asked: the lake alone, and the log says so
    with caplog.at_level(logging.WARNING, logger="recstack.export.erasure"):
        assert erased_subjects(lake, "redis://127.0.0.1:1/0", names) == {"a" * 32, "b" * 32}
    assert "cannot read erasure tombstones from Redis at redis://127.0.0.1:1/0" in caplog.text
    assert "the lake's audit table alone" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recstack.export.erasure"):
        assert erased_subjects(lake, None, names) == {"a" * 32, "b" * 32}
    assert "the lake's audit table alone" in caplog.text


@pytest.mark.redis
def test_export_config_reads_the_collectors_redis_and_key(tmp_path: Path, names: StreamNames, key: bytes) -> None:
    from recstack.cli.export import erasures_from_config

    redis.Redis.from_url(REDIS_URL).sadd(tombstone_key(names), Pseudonymiser(key).user("u3"))
    lake = audit_lake(tmp_path / "lake", Pseudonymiser(key).user("u7"))
    cfg = compose("export", ["run=x", f"erasure.lake={lake}", f"erasure.stream={names.stream}"])
    erasures = erasures_from_config(cfg.erasure)
    assert erasures.key == key and list(erasures.mask(["u3", "u4", "u7"])) == [True, False, True]
    lake_only = erasures_from_config(
        compose("export", ["run=x", f"erasure.lake={lake}", "erasure.redis_url=''"]).erasure
    )
    assert list(lake_only.mask(["u3", "u7"])) == [False, True]


def test_ids_match_as_themselves_or_by_their_pseudonym(key: bytes) -> None:
    pseudo = Pseudonymiser(key)
    erasures = Erasures(frozenset({pseudo.user("42"), "f" * 32}), key)
    assert list(erasures.mask(["42", "43", "f" * 32, pseudo.visitor("43")])) == [True, False, True, False]
    assert not Erasures().mask(["42"]).any()  # nobody erased: no key needed
    with pytest.raises(ErasureError, match="no pseudonymisation key is configured"):
        Erasures(frozenset({"f" * 32}), None)


def test_cli_without_a_key_refuses_once_anyone_is_erased(tmp_path: Path) -> None:
    lake = audit_lake(tmp_path / "lake", "a" * 32)
    env = {k: v for k, v in os.environ.items() if k not in ("RECSTACK_HMAC_KEY", "RECSTACK_HMAC_KEY_FILE")}
    args = ["run=no-such-run", f"out={tmp_path / 'bundle'}", "erasure.redis_url=''"]
    done = subprocess.run(
        [sys.executable, "-m", "recstack.cli.export", *args, f"erasure.lake={lake}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "recstack-export: error: 1 subject(s) have been erased, but no pseudonymisation key" in done.stderr
    assert not (tmp_path / "bundle").exists()


def bundle_args(split: PreparedSplit) -> dict:
    return random_bundle_args(split, "mf", ["item_idx", "item_id", "title", "year", "categories"])


def test_a_bundle_still_holding_an_erased_user_is_refused(
    tiny_split: PreparedSplit, tmp_path: Path, key: bytes
) -> None:
    erasures = Erasures(frozenset({Pseudonymiser(key).user("u3")}), key)
    # Written without the erasure step: the final check finds the user
    unredacted = write_bundle(tmp_path / "unredacted", **bundle_args(tiny_split))
    with pytest.raises(ErasureError, match=r"users\.parquet still holds 1 erased user\(s\) \(user_idx \[3\]\)"):
        check_no_erased_users(unredacted, erasures)
    # As the writer's last step: nothing is left behind, and a bundle already there stays as it was
    before = {p.name: p.read_bytes() for p in unredacted.iterdir()}
    for out in (tmp_path / "new", unredacted):
        with pytest.raises(ErasureError, match="still holds 1 erased user"):
            write_bundle(out, **bundle_args(tiny_split), check=partial(check_no_erased_users, erasures=erasures))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny", "unredacted"]
    assert {p.name: p.read_bytes() for p in unredacted.iterdir()} == before
    # With the erasure step it passes
    args = bundle_args(tiny_split)
    redacted = redact_users(args["users"], args["user_embeddings"], args["seen"], erasures)
    out = write_bundle(
        tmp_path / "redacted",
        **(args | {"users": redacted.users, "user_embeddings": redacted.user_embeddings, "seen": redacted.seen}),
        erased_users=len(redacted.erased),
        check=partial(check_no_erased_users, erasures=erasures),
    )
    assert "u3" not in Bundle.load(out).user_index and Bundle.load(out).manifest.erased_users == 1


def test_ranker_rows_are_found_from_the_graph(tmp_path: Path) -> None:
    path = export_tiny_ranker(tmp_path / "r.onnx", n_users=12, n_items=12, item_groups=np.arange(12) % 4)
    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    assert zero_ranker_users(path, np.array([2, 5]), n_users=12) == ("user.weight",)
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    assert not after["user.weight"][[2, 5]].any()
    keep = np.setdiff1d(np.arange(13), [2, 5])  # the unknown user's row (12) included
    np.testing.assert_array_equal(after["user.weight"][keep], before["user.weight"][keep])
    assert all(np.array_equal(after[n], before[n]) for n in before if n != "user.weight")  # n_users == n_items here


def test_a_ranker_using_user_idx_otherwise_is_refused(tmp_path: Path) -> None:
    table = numpy_helper.from_array(np.ones((4, 2), np.float32), "table")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["user_idx"], ["u32"], to=onnx.TensorProto.INT32),
            helper.make_node("Gather", ["table", "u32"], ["score"]),
        ],
        "g",
        [helper.make_tensor_value_info("user_idx", onnx.TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["batch", 2])],
        [table],
    )
    path = tmp_path / "r.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ErasureError, match="user_idx feeds a Cast node"):
        zero_ranker_users(path, np.array([1]), n_users=3)


# -- on real trained runs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {m: train_tiny(m, split, root) for m in ("mf", "wide_deep")}


def initializers(bundle: Bundle) -> dict[str, np.ndarray]:
    assert bundle.ranker_path is not None
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(bundle.ranker_path)).graph.initializer}


@pytest.mark.slow
@pytest.mark.redis
def test_export_leaves_erased_users_out_of_everything(
    runs: dict[str, Path], tmp_path: Path, names: StreamNames, key: bytes
) -> None:
    from recstack.export.exporter import export_run

    pseudo = Pseudonymiser(key)
    redis.Redis.from_url(REDIS_URL).sadd(tombstone_key(names), pseudo.user("u3"))  # DELETE /users/u3, just now
    lake = audit_lake(tmp_path / "lake", pseudo.user("u7"))  # erased earlier, stored by the consumer
    erasures = Erasures(erased_subjects(lake, REDIS_URL, names), key)
    export = partial(export_run, runs["mf"], index_config=IndexConfig(kind="flat"), ranker_run=runs["wide_deep"])
    before = Bundle.load(export(tmp_path / "before", text=False))
    after = Bundle.load(export(tmp_path / "after", text=False, erasures=erasures))
    gone = [3, 7]
    kept = np.setdiff1d(np.arange(30), gone)

    m = after.manifest
    assert (m.n_users, m.erased_users, before.manifest.erased_users) == (30, 2, 0)
    users = pd.read_parquet(after.root / USERS)
    assert not users["user_id"].isin(["u3", "u7"]).any() and len(users) == 28
    assert "u3" not in after.user_index and "u7" not in after.user_index
    assert not after.user_embeddings[gone].any()
    np.testing.assert_array_equal(after.user_embeddings[kept], before.user_embeddings[kept])
    assert [len(after.seen_items(u)) for u in gone] == [0, 0] and all(len(before.seen_items(u)) for u in gone)
    assert all(np.array_equal(after.seen_items(u), before.seen_items(u)) for u in kept)

    # The ranker: exactly the Wide & Deep serving form's per-user tables lose those rows; nothing else changes
    old, new = initializers(before), initializers(after)
    per_user = {"u_vec", "u_deep", "u_cross", "u_bias"}
    assert {name for name, a in old.items() if a.shape[0] == 31} == per_user
    for name in per_user:
        assert not new[name][gone].any() and old[name][gone].any()
        rest = np.setdiff1d(np.arange(31), gone)  # the unknown user's row (30) included
        np.testing.assert_array_equal(new[name][rest], old[name][rest])
    assert all(np.array_equal(new[n], old[n]) for n in old if n not in per_user)

    # Served: the erased users are strangers (cold start); everyone else gets exactly what they got before
    served, baseline = Pipeline.from_bundle(after), Pipeline.from_bundle(before)
    for user in ("u3", "u7"):
        ranked = served.recommend(Query(user_id=user, k=5))
        assert (ranked.user_source, ranked.stage) == ("popularity", "popularity")
    for u in kept:
        got, want = served.recommend(Query(user_id=f"u{u}", k=5)), baseline.recommend(Query(user_id=f"u{u}", k=5))
        assert got.stage == "rerank"
        np.testing.assert_array_equal(got.items, want.items)
        np.testing.assert_allclose(got.scores, want.scores)


@pytest.mark.slow
def test_lake_to_bundle_then_erasure_then_export_again(tmp_path: Path, key: bytes) -> None:
    """Events -> lake -> prepare data=lake -> train -> export; erase one person in the lake; export the same run
    again: neither their pseudonym nor their raw id is in any byte of the new bundle."""
    from recstack.collect.lake_admin import erase
    from recstack.config import prepare_named
    from recstack.export.exporter import export_run

    pseudo = Pseudonymiser(key)
    lake = tmp_path / "lake"
    people = [f"person-{p}" for p in range(30)]
    events = [
        {
            "event_id": f"e{p}-{k}",
            "user_id": pseudo.user(person),
            "anonymous": False,
            "item_id": f"i{(p * 7 + k * 3) % 40}",
            "event_type": ("view", "click", "purchase")[k % 3],
            "received_ts": NOW_MS + 60_000 * k,
            "source": "api",
            "gender": "F" if p % 2 else "M",
        }
        for p, person in enumerate(people)
        for k in range(10)
    ]
    lake_io.write_rows(lake, "events", events)
    overrides = [f"data.source.path={lake}", "data.source.now=2026-11-30T12:00:00+00:00"]
    split = prepare_named("lake", "random", overrides, out_root=tmp_path / "processed")
    run = train_tiny("mf", split, tmp_path / "runs")
    names = StreamNames(stream=f"recstack-test:{uuid.uuid4().hex[:10]}:collect")  # no tombstones: the lake only

    def bundle_bytes(out: Path) -> bytes:
        """Every file's bytes, and the decoded rows of the Parquet ones (compression can hide a string's bytes)."""
        erasures = Erasures(erased_subjects(lake, None, names), key)
        folder = export_run(run, out, index_config=IndexConfig(kind="flat"), text=False, erasures=erasures)
        files = sorted(folder.iterdir())
        tables = [pd.read_parquet(p).to_csv().encode() for p in files if p.suffix == ".parquet"]
        return b"".join([p.read_bytes() for p in files] + tables)

    subject = pseudo.user(people[3])
    assert subject.encode() in bundle_bytes(tmp_path / "before")  # the search below can see it
    erase(lake, {subject})
    after = bundle_bytes(tmp_path / "after")
    assert subject.encode() not in after and people[3].encode() not in after
    assert Bundle.load(tmp_path / "after").manifest.erased_users == 1
