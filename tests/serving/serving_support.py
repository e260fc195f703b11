"""Serving test helpers: a real BentoML server on loopback (the test bundle is in tests/bundle_support.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = Path(sys.executable).with_name("recstack-serve")
READY = "recstack-serve: ready on "


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[str]
    log: Path
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)

    def client(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def output(self) -> str:
        return "".join(self.lines)


TEST_HMAC_KEY = "test-only-pseudonymisation-key-0123456789abcdef"
CONSENTED = ("consent_for_personalisation=false", "collector.consent_required=false", "auth=false", "rate_limit=false")
"""Tests of serving mechanics run as if every user had consented, with keys and rate limits off (the consent, access
and rate-limit tests turn them back on)."""


def launch(
    overrides: list[str], log: Path, *, extra_env: dict | None = None, cwd: Path = REPO, port: int | None = None
) -> Server:
    """``recstack-serve <overrides>`` on a loopback port; its output goes to ``log`` and is watched for the ready line
    (the supervisor prints it once every worker reported ready). Returns at once: see :func:`wait_ready`."""
    port = port or free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "RECSTACK_HMAC_KEY": TEST_HMAC_KEY, **(extra_env or {})}
    argv = [str(SERVE), *CONSENTED, *overrides, "host=127.0.0.1", f"port={port}"]
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    server = Server(f"http://127.0.0.1:{port}", process, log)

    def pump() -> None:
        with log.open("w") as out:
            for line in process.stdout:  # type: ignore[union-attr]
                server.lines.append(line)
                out.write(line)
                out.flush()
                if line.startswith(READY):
                    server.ready.set()

    threading.Thread(target=pump, daemon=True).start()
    return server


def wait_ready(server: Server, timeout: float = 180) -> Server:
    """Until the supervisor says ready (or the process exits: an error with its output)."""
    deadline = time.monotonic() + timeout
    while not server.ready.wait(0.2):
        if server.process.poll() is not None:
            server.ready.wait(1)  # let the reader drain the last lines
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.output()[-4000:]}")
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"server not ready in {timeout} s:\n{server.output()[-4000:]}")
    return server


def start_server(
    bundle: Path,
    log: Path,
    *,
    redis_url: str,
    redis_prefix: str,
    overrides: list[str] | None = None,
    extra_env: dict | None = None,
) -> Server:
    """A real ``recstack-serve`` (supervisor + ``bentoml serve``) over ``bundle``, waited on until it says ready."""
    args = [
        f"bundle={bundle}",
        f"redis_url={redis_url}",
        f"redis_prefix={redis_prefix}",
        f"collector.stream={redis_prefix}collect",
        *(overrides or []),
    ]
    return wait_ready(launch(args, log, extra_env=extra_env))


def stop_server(server: Server, timeout: float = 30) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private ``redis-server`` (no persistence, DEBUG allowed), waited on until it answers PING."""
    import redis

    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*argv, "--enable-debug-command", "yes"],  # DEBUG SLEEP: a Redis that is up but slow
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return process
        except redis.RedisError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")
