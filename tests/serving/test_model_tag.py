"""The bundle as a BentoML model tag: saved to a private model store, served by tag through recstack-serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_support import launch, stop_server, wait_ready

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
    server = launch(
        ["bundle=recstack:latest", f"redis_prefix={redis_prefix}"], tmp_path / "serve.log", extra_env=env, cwd=tmp_path
    )  # recstack-serve finds serving/service.py from anywhere
    try:
        wait_ready(server)
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["model"] == tag
        answer = httpx.post(f"{server.base_url}/recommend", json={"user_id": "u1", "k": 3}, timeout=10)
        assert answer.status_code == 200 and answer.json()["model"] == tag
    finally:
        stop_server(server)
    assert "Traceback" not in server.output()
