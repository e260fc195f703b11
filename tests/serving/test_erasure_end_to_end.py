"""Erasure end to end, asked of the running service and of the files: people's events go through the collector and
the real consumer into the lake, a model is trained on the lake and exported, the service serves it; then one person
is erased (DELETE /users/{id}, recstack-collect erase, the next recstack-export), and the service, Redis, the lake and
the re-exported bundle hold no trace of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
from serving_support import TEST_HMAC_KEY, start_server, stop_server

from recstack.collect.app import build_collector
from recstack.collect.consumer import LakeConsumer
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.config import collect_settings, compose, config_dir, prepare_named
from recstack.data.lake import read_table

pytestmark = [pytest.mark.slow, pytest.mark.redis]
PEOPLE = [f"person-{p}@example.com" for p in range(30)]
ERASED = PEOPLE[3]


def everything_bytes(folder: Path) -> bytes:
    """Every file's bytes plus the decoded rows of the Parquet ones (compression can hide a string's bytes)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    tables = [pd.read_parquet(p).to_csv().encode() for p in files if p.suffix == ".parquet"]
    return b"".join([p.read_bytes() for p in files] + tables)


def test_erased_person_leaves_no_trace(tmp_path: Path) -> None:
    prefix = f"recstack-test:{uuid.uuid4().hex[:10]}:"
    stream, lake = f"{prefix}collect", tmp_path / "lake"
    settings = collect_settings([f"stream={stream}", f"recent_prefix='{prefix}'", f"lake={lake}"])
    subject = Pseudonymiser(TEST_HMAC_KEY.encode()).user(ERASED)
    assert os.environ["RECSTACK_HMAC_KEY"] == TEST_HMAC_KEY  # one key for the collector, service, consumer, export

    # 1. events through the collector (in-process, same code as the service's) and the real consumer -> lake
    import anyio

    async def send() -> None:
        collector = build_collector(settings, str(config_dir() / "mappings" / "demographics.yaml"))
        transport = httpx.ASGITransport(app=collector.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            for p, person in enumerate(PEOPLE):
                await http.post(
                    "/consent", json={"user_id": person, "purposes": {"analytics": True, "personalisation": True}}
                )
                events = [
                    {
                        "user_id": person,
                        "item_id": f"i{(p * 7 + k * 3) % 40}",
                        "event_type": ("view", "click", "purchase")[k % 3],
                    }
                    for k in range(10)
                ]
                assert (await http.post("/events", json={"events": events})).json()["accepted"] == 10

    anyio.run(send)
    LakeConsumer(settings, "e2e").run(max_seconds=2.0)
    assert subject in set(read_table(lake, "events")["user_id"].to_pylist())

    # 2. prepare from the lake, train, export
    from recstack.export.erasure import Erasures, erased_subjects
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig
    from recstack.training.train import train

    split = prepare_named("lake", "random", [f"data.source.path={lake}"], out_root=tmp_path / "processed")
    cfg = compose(
        "train", ["model=mf", "fit.max_epochs=2", "logger=none", "progress=false", f"run_dir={tmp_path / 'run'}"]
    )
    run = train(cfg, split=split).run_dir

    def export(out: Path) -> Path:
        erasures = Erasures(erased_subjects(lake, settings.redis_url, settings.names), TEST_HMAC_KEY.encode())
        return export_run(run, out, index_config=IndexConfig(kind="flat"), text=False, erasures=erasures)

    before = export(tmp_path / "before")
    assert subject.encode() in everything_bytes(before)  # the search below can see it

    # 3. the service knows them (a trained user, looked up by pseudonym), then the erasure
    server = start_server(before, tmp_path / "serve.log", redis_url=settings.redis_url, redis_prefix=prefix)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            known = http.post("/recommend", json={"user_id": ERASED, "k": 5}).json()
            assert known["user_source"] == "trained" and known["personalised"] is True, known
            http.post("/events", json={"user_id": ERASED, "item_id": "i1", "event_type": "click"})
            assert http.delete(f"/users/{ERASED}").status_code == 204
            after = http.post("/recommend", json={"user_id": ERASED, "k": 5, "exclude_seen": False}).json()
            assert after["personalised"] is False and after["user_source"] == "popularity"
            assert http.get("/consent", params={"user_id": ERASED}).json()["recorded"] is False
    finally:
        stop_server(server)
    argv = [
        str(Path(sys.executable).with_name("recstack-collect")),
        "erase",
        f"user_id={ERASED}",
        f"collector.stream={stream}",
        f"collector.lake={lake}",
        "wait_s=5",
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    # 4. no trace: Redis (beyond the tombstone that keeps them erased), the lake, a re-exported bundle
    client = redis.Redis.from_url(settings.redis_url)
    keys = [k.decode() for k in client.scan_iter(match=f"{prefix}*")]
    assert not [k for k in keys if subject in k], keys
    assert client.sismember(f"{stream}:erased", subject)
    lake_rows = read_table(lake, "events")
    assert subject not in set(lake_rows["user_id"].to_pylist()) and lake_rows.num_rows == 29 * 10
    audit = read_table(lake, "audit").to_pylist()
    assert any(r["action"] == "erasure" and r["subject"] == subject for r in audit)  # the record of the erasure
    data_bytes = b"".join(everything_bytes(lake / t) for t in ("events", "aliases") if (lake / t).exists())
    assert subject.encode() not in data_bytes and ERASED.encode() not in data_bytes
    again = export(tmp_path / "after")
    bundle = everything_bytes(again)
    assert subject.encode() not in bundle and ERASED.encode() not in bundle
    assert json.loads((again / "manifest.json").read_text())["erased_users"] == 1
    for key in keys:
        client.delete(key)
