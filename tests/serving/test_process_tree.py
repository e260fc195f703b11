"""recstack-serve's process tree with a real server on loopback: a bad bundle never starts BentoML, a worker that
fails at start-up or dies later stops the server (the port closes, nothing hangs), and SIGTERM/SIGINT stop the whole
tree within 5 s. Every wait is on what the process reports (its output lines, its exit), with generous bounds."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
from serving_support import SERVE, free_port, launch, stop_server, wait_ready

from recstack.bundle.layout import MANIFEST, sha256_file
from recstack.bundle.reader import read_manifest
from recstack.serving.supervisor import EXIT_STARTUP_FAILED, EXIT_WORKER_DIED

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _alive(process: psutil.Process) -> bool:
    """Running, as opposed to gone (reaped already) or a zombie."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_a_tampered_bundle_exits_before_bentoml_starts(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    with (bundle / "item_embeddings.npy").open("r+b") as f:  # one flipped byte in the data, manifest untouched
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    port = free_port()
    done = subprocess.run([str(SERVE), f"bundle={bundle}", f"port={port}"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sha256 mismatch" in done.stderr and "item_embeddings.npy" in done.stderr
    assert "bentoml serve" not in done.stdout and "Starting production" not in done.stdout + done.stderr
    assert _refused(port)


def test_a_worker_failing_at_startup_stops_the_server(tiny_bundle: Path, tmp_path: Path) -> None:
    """The files match their hashes (re-signed), but ONNX Runtime rejects the ranker: only a worker can find out."""
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = read_manifest(bundle)
    assert manifest.ranker is not None
    (bundle / manifest.ranker.file).write_bytes(b"not an onnx model")
    files = {**manifest.files, manifest.ranker.file: sha256_file(bundle / manifest.ranker.file)}
    (bundle / MANIFEST).write_text(dataclasses.replace(manifest, files=files).to_json())

    server = launch([f"bundle={bundle}", "workers=2"], tmp_path / "serve.log")
    port = int(server.base_url.rsplit(":", 1)[1])
    try:
        # Once a worker's failure is reported, a health check gets an answer or a refused/reset connection within a
        # short client timeout, never a hang. Before that, while the workers load, the socket accepts and waits: the
        # documented start-up window (serving/README.md), which a client bounds with its own short timeout.
        while server.process.poll() is None:
            failure_reported = "failed at start-up" in server.output()
            try:
                with contextlib.suppress(httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    httpx.get(f"{server.base_url}/readyz", timeout=10)
            except httpx.TimeoutException:
                assert not failure_reported, "a request hung after the worker failure was reported:\n" + server.output()
            try:
                server.process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
        assert server.process.wait(timeout=180) == EXIT_STARTUP_FAILED, server.output()
    finally:
        stop_server(server)
    server.ready.wait(1)
    output = server.output()
    assert "failed at start-up" in output and "stopping the server" in output, output[-3000:]
    assert "ready on" not in output
    assert _refused(port)


def test_a_worker_dying_after_startup_stops_the_server(tiny_bundle: Path, tmp_path: Path, redis_prefix: str) -> None:
    server = wait_ready(launch([f"bundle={tiny_bundle}", f"redis_prefix={redis_prefix}"], tmp_path / "serve.log"))
    port = int(server.base_url.rsplit(":", 1)[1])
    try:
        workers = [int(line.split()[2]) for line in server.lines if line.startswith("recstack-serve: worker ")]
        assert len(workers) == 2, server.output()
        psutil.Process(workers[0]).kill()
        assert server.process.wait(timeout=60) == EXIT_WORKER_DIED
    finally:
        stop_server(server)
    assert f"worker {workers[0]} exited after start-up" in server.output()
    assert _refused(port)
    with contextlib.suppress(psutil.NoSuchProcess):
        assert not _alive(psutil.Process(workers[1]))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_whole_tree_within_5_s(
    signum: int, tiny_bundle: Path, tmp_path: Path, redis_prefix: str
) -> None:
    server = wait_ready(launch([f"bundle={tiny_bundle}", f"redis_prefix={redis_prefix}"], tmp_path / "serve.log"))
    port = int(server.base_url.rsplit(":", 1)[1])
    tree = psutil.Process(server.process.pid).children(recursive=True)
    assert len(tree) >= 3, tree  # the BentoML arbiter and two workers
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
    server.process.send_signal(signum)
    try:
        assert server.process.wait(timeout=5) == 0, server.output()
    finally:
        stop_server(server)
    _, alive = psutil.wait_procs(tree, timeout=1)
    assert [p for p in alive if _alive(p)] == []
    assert _refused(port)
