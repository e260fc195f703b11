"""Redis dies mid-test (a private redis-server, so the shared one is untouched): the service keeps answering from the
bundle, says so in /readyz and in each answer, never a 500, never a hang; and recovers when Redis returns."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from serving_support import start_redis, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.redis]

# Answers these tests expect to be non-degraded must not degrade because a loaded machine read Redis's reply late.
GENEROUS = ["redis_timeout_s=1.0"]


def _wait_until_down(port: int, timeout: float = 30) -> None:
    """Until Redis on ``port`` refuses a PING (what Redis reports, not a fixed sleep)."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
        except redis.RedisError:
            return
        assert time.monotonic() < deadline, f"redis on {port} still answers after shutdown"
        time.sleep(0.05)


def test_redis_down_mid_test_degrades_without_errors(private_redis: int, tiny_bundle: Path, tmp_path: Path) -> None:
    port = private_redis
    server = start_server(
        tiny_bundle,
        tmp_path / "bentoml.log",
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_prefix="deg:",
        overrides=GENEROUS,
    )
    try:
        # A hang guard, not a benchmark: every call is bounded by the 1 s Redis timeout, far inside 10 s.
        with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
            known_before = http.post("/recommend", json={"user_id": "u4", "k": 5}).json()
            http.post("/events", json={"user_id": "fresh", "item_id": "i3", "event_type": "click"})
            assert http.post("/recommend", json={"user_id": "fresh"}).json()["user_source"] == "recent_activity"

            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True)
            _wait_until_down(port)

            for _ in range(30):
                known = http.post("/recommend", json={"user_id": "u4", "k": 5})
                assert known.status_code == 200, known.text
                assert known.json()["degraded"] is True
                assert known.json()["items"] == known_before["items"]  # trained users unaffected
                cold = http.post("/recommend", json={"user_id": "fresh"})
                assert cold.status_code == 200 and cold.json()["user_source"] == "popularity"
                event = http.post("/events", json={"user_id": "fresh", "item_id": "i5", "event_type": "view"})
                # an event cannot be stored without Redis: refused with a retry hint, never a silent drop or a 500
                assert event.status_code == 503 and event.headers["retry-after"], event.text
                assert event.json()["field"] == "body"
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert ready.json()["online_store"]["available"] is False

            # Redis comes back on the same port: the breaker's probe finds it within its back-off.
            restarted = start_redis(port)
            try:
                deadline = time.monotonic() + 30
                while http.get("/readyz").json()["status"] != "ready":
                    assert time.monotonic() < deadline, "online store did not recover"
                    time.sleep(0.5)
                assert http.post("/recommend", json={"user_id": "u4"}).json()["degraded"] is False
            finally:
                restarted.kill()
                restarted.wait()
        assert "Traceback" not in server.log.read_text()
    finally:
        stop_server(server)


def test_slow_redis_times_out_to_degraded_answers(private_redis: int, tiny_bundle: Path, tmp_path: Path) -> None:
    port = private_redis
    server = start_server(
        tiny_bundle,
        tmp_path / "bentoml.log",
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_prefix="slow:",
        overrides=GENEROUS,
    )
    try:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
            before = http.post("/recommend", json={"user_id": "u7", "k": 5}).json()
            assert before["degraded"] is False
            # Redis accepts connections but answers nothing: the pause is in force once this call returns, and it
            # outlasts the loop below (each request is bounded by the 1 s Redis timeout; the breaker skips most).
            redis.Redis(host="127.0.0.1", port=port).execute_command("CLIENT", "PAUSE", 120_000, "ALL")
            answers = [http.post("/recommend", json={"user_id": "u7", "k": 5}) for _ in range(20)]
        # A hang would have hit the client's 10 s timeout, long before the pause ended.
        assert all(a.status_code == 200 for a in answers)
        assert all(a.json()["degraded"] for a in answers)
        assert all(a.json()["items"] == before["items"] for a in answers)
    finally:
        stop_server(server)
