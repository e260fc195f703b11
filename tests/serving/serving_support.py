"""Serving test helpers: a small structured bundle with a real ONNX ranker, and a real BentoML server on loopback."""

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
import numpy as np

from recstack.bundle.contract import INPUT_NAMES, SCORE
from recstack.data.prepared import PreparedSplit

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def export_tiny_ranker(path: Path, n_users: int, n_items: int, item_groups: np.ndarray, seed: int = 0) -> Path:
    """A Wide & Deep-shaped ranker honouring the bundle contract (user/item/hour/dow int64 -> score), via torch."""
    import torch

    torch.manual_seed(seed)

    class TinyRanker(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user = torch.nn.Embedding(n_users + 1, 8)  # + the OOV row
            self.item = torch.nn.Embedding(n_items, 8)
            self.hour = torch.nn.Embedding(24, 1)
            self.dow = torch.nn.Embedding(7, 1)
            self.item_bias = torch.nn.Embedding(n_items, 1)
            with torch.no_grad():  # structure: users like their group's items, as in the split
                self.item.weight.normal_(0, 0.1)
                self.user.weight.normal_(0, 0.1)
                for i, g in enumerate(item_groups):
                    self.item.weight[i, int(g)] += 1.0
                for u in range(n_users):
                    self.user.weight[u, u % 4] += 1.0

        def forward(self, user_idx, item_idx, hour, dow):  # type: ignore[no-untyped-def]
            dot = (self.user(user_idx) * self.item(item_idx)).sum(-1)
            return dot + self.item_bias(item_idx).squeeze(-1) + self.hour(hour).squeeze(-1) + self.dow(dow).squeeze(-1)

    model = TinyRanker().eval()
    b = 5
    args = tuple(torch.zeros(b, dtype=torch.long) for _ in range(4))
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=[SCORE],
        dynamic_axes={n: {0: "batch"} for n in [*INPUT_NAMES, SCORE]},
        dynamo=False,
    )
    return path


def write_test_bundle(out: Path, split: PreparedSplit, *, seed: int = 0, text: bool = True) -> Path:
    """A bundle from the tiny split: group-structured embeddings, popularity, seen = train, a real ONNX ranker."""
    from recstack.bundle.writer import write_bundle

    rng = np.random.default_rng(seed)
    n_users, n_items, d = split.n_users, split.n_items, 8
    groups = np.arange(n_items) % 4
    item_emb = rng.normal(0, 0.1, (n_items, d)).astype(np.float32)
    item_emb[np.arange(n_items), groups] += 1.0
    user_emb = rng.normal(0, 0.1, (n_users, d)).astype(np.float32)
    user_emb[np.arange(n_users), np.arange(n_users) % 4] += 1.0
    items = split.items[["item_idx", "item_id", "title", "year", "categories"]].copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    users = split.users.copy()
    text_emb = None
    if text:
        text_emb = rng.normal(0, 1, (n_items, 16)).astype(np.float32)
        text_emb[np.arange(n_items), groups] += 3.0
    ranker = export_tiny_ranker(out.parent / f"{out.name}-ranker.onnx", n_users, n_items, groups, seed)
    return write_bundle(
        out,
        model_kind="mf",
        users=users,
        items=items,
        user_embeddings=user_emb,
        item_embeddings=item_emb,
        seen=split.matrix("train"),
        index_config={"kind": "flat", "metric": "ip"},
        item_text_embeddings=text_emb,
        ranker_onnx=ranker,
        dataset="tiny",
        split_hash=split.config_hash,
    )


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


def launch(
    overrides: list[str], log: Path, *, extra_env: dict | None = None, cwd: Path = REPO, port: int | None = None
) -> Server:
    """``recstack-serve <overrides>`` on a loopback port; its output goes to ``log`` and is watched for the ready line
    (the supervisor prints it once every worker reported ready). Returns at once: see :func:`wait_ready`."""
    port = port or free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", **(extra_env or {})}
    argv = [str(SERVE), *overrides, "host=127.0.0.1", f"port={port}"]
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
    args = [f"bundle={bundle}", f"redis_url={redis_url}", f"redis_prefix={redis_prefix}", *(overrides or [])]
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
