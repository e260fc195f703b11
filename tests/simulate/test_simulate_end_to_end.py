"""The simulator against a real service (two A/B arms, API keys with roles, consent required) and a real
``recstack-collect consume``: the online MAP@10 of each arm, read back from the lake with the monitor's SQL, equals the
offline evaluator's MAP@10 of the arm's bundle on the same users (and user by user, the served lists score what the
offline pipeline's lists score); CTR@10 equals the offline HitRate@10 (every position examined); the monitor's
figures equal the simulator's own records."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from recstack.cli.demo_simulate import collector_overrides, running, server_argv, serving
from recstack.config import collect_settings
from recstack.data.prepared import PreparedSplit
from recstack.serving.api_keys import new_key, write_key_file
from recstack.simulate.run import SimulateSettings, simulate
from recstack.simulate.traffic import ApiKeys, TrafficSettings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_online_map_of_each_arm_equals_its_offline_map(
    tmp_path: Path,
    serving_split: PreparedSplit,
    sim_bundles: dict[str, Path],
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    recommend_key, recommend_entry = new_key("recommend", "sim-recommend")
    collect_key, collect_entry = new_key("collect", "sim-collect")
    keys_file = tmp_path / "api_keys.yaml"
    write_key_file(keys_file, [recommend_entry, collect_entry])
    lake = tmp_path / "lake"
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = server_argv(sim_bundles, port, keys_file, redis_prefix, lake)
    consume = [
        str(Path(argv[0]).with_name("recstack-collect")),
        "consume",
        "consumer=sim-test",
        *collector_overrides(redis_prefix, lake),
        "collector.flush_interval_s=0.2",
    ]
    collect = collect_settings([o.removeprefix("collector.") for o in collector_overrides(redis_prefix, lake)])
    settings = SimulateSettings(
        traffic=TrafficSettings(base_url=base_url, k=10, concurrency=4, max_batch=collect.max_batch),
        bundles=tuple(str(p) for p in sim_bundles.values()),
        progress=False,
        wait_s=60,
        monitor_out=str(tmp_path / "monitor"),
        monitor_report=False,  # its plots are the monitor's tests' business
    )
    with serving(argv, tmp_path / "serve.log", base_url), running(consume, tmp_path / "consume.log"):
        result = simulate(serving_split, settings, collect, ApiKeys(recommend=recommend_key, collect=collect_key))

    n_test_users = int(np.count_nonzero(np.diff(serving_split.matrix("test").indptr)))
    assert len(result.visits) == n_test_users == result.lake_impressions
    assert result.not_personalised == 0
    assert result.records_agree, "the lake judged the impressions differently from what the simulator sent"
    assert {a.arm for a in result.arms} == {"mf", "lgcn"}
    assert all(a.impressions > 5 for a in result.arms)
    user_of = {v.request_id: v.visitor.user_idx for v in result.visits}
    for arm in result.arms:
        assert arm.offline_map is not None and arm.offline_mode == "retrieval + re-rank"
        assert arm.exact and arm.agrees and arm.matches_monitor, arm
        assert arm.map == pytest.approx(arm.offline_map, abs=1e-12)
        assert arm.ctr == pytest.approx(arm.offline_hit, abs=1e-12)
        # user by user: each served list scores exactly what the offline pipeline's list scores
        rows = np.flatnonzero(result.judged.arms == arm.arm)
        group = result.judged.take(rows)
        users = np.array([user_of[r] for r in group.request_ids], dtype=np.int64)
        reference = result.references[arm.bundle]
        np.testing.assert_allclose(group.metric("map", 10), reference.on("map", users), atol=1e-12)
        np.testing.assert_allclose(group.metric("ndcg", 10), reference.on("ndcg", users), atol=1e-12)
    assert len({a.map for a in result.arms}) == 2  # two different bundles, two different figures
    assert (tmp_path / "monitor" / "summary.json").is_file()
    assert sorted(result.ab["metric"]) == ["ctr@10", "map@10"]  # the monitor's A/B verdicts of the two arms
