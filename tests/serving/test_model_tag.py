"""The bundle as a BentoML model tag: saved to a private model store, served by tag through recstack-serve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_recstack_serve_by_model_tag(tiny_bundle: Path, tmp_path: Path, redis_prefix: str) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "RECSTACK_REDIS_PREFIX": redis_prefix}
    saved = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from recstack.export.model_store import save_to_store; print(save_to_store({str(tiny_bundle)!r}))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert saved.returncode == 0, saved.stderr[-2000:]
    tag = saved.stdout.strip().splitlines()[-1]
    port = free_port()
    serve = Path(sys.executable).with_name("recstack-serve")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(serve), "bundle=recstack:latest", f"port={port}", f"redis_prefix={redis_prefix}"],
        env=env,
        cwd=tmp_path,  # recstack-serve finds serving/service.py from anywhere
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, (tmp_path / "serve.log").read_text()[-3000:]
        assert ready.json()["model"] == tag
        answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": "u1", "k": 3}, timeout=5)
        assert answer.status_code == 200 and answer.json()["model"] == tag
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
