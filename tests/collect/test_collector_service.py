"""The collector as its own BentoML service (serving/collector.py), a real server on loopback: pixel, events, guards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.redis]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_standalone_collector_service(tmp_path: Path) -> None:
    port = free_port()
    bentoml = Path(sys.executable).with_name("bentoml")
    log = (tmp_path / "collector.log").open("w")
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    argv = [str(bentoml), "serve", "serving.collector:Collector", "--port", str(port), "--host", "127.0.0.1"]
    server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=base, timeout=10) as http:
            while True:  # until the server answers (or exits: fail with its log)
                assert server.poll() is None, (tmp_path / "collector.log").read_text()[-3000:]
                try:
                    if http.get("/livez").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "collector service not up in 120 s"
                time.sleep(0.2)
            pixel = http.get("/pixel.gif", params={"e": "view", "i": "1"})
            assert pixel.status_code == 200 and len(pixel.content) == 43
            assert "rs_vid=" in pixel.headers["set-cookie"]
            event = http.post("/events", json={"user_id": "u", "item_id": "1", "event_type": "view"})
            assert event.status_code == 202 and event.json()["reason"] == "no_analytics_consent"  # opt-in default
            form = http.post("/events", data={"event_type": "view"})
            assert form.status_code == 415 and form.json()["field"] == "content-type"
            assert http.get("/collector/openapi.json").json()["paths"]["/events"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
