"""``recstack-serve``'s process model: one supervisor over ``bentoml serve``, which stops the tree instead of looping.

BentoML 1.4 runs an arbiter (circus) that binds the port and respawns its workers forever: a worker that fails at
start-up ("Application startup failed. Exiting.") is started again and again, while the arbiter's socket keeps
accepting connections nobody answers. The supervisor closes that gap:

* it runs ``bentoml serve`` as its child, in a session of its own, and listens on a Unix socket whose path it passes
  to the workers (``$RECSTACK_SUPERVISOR_SOCKET``). Each worker connects in its ``__init__`` and reports ``ready`` or
  ``failed <reason>``, then keeps the connection open for its whole life (:class:`WorkerLink`), so a worker's death is
  an end-of-file here, at once, with no polling;
* ``ready`` from every worker: it prints ``recstack-serve: ready on <url>``. A ``failed`` report, a worker gone
  (before or after ready), the child exiting, or no full readiness within ``startup_timeout_s``: it stops the whole
  tree and exits non-zero with the reason, so the port closes and the orchestrator sees a dead server, not a hung one;
* SIGTERM / SIGINT / SIGHUP: it forwards SIGTERM to every process of the tree, gives them ``stop_timeout_s``, then
  SIGKILLs what is left, and exits (0 on a clean stop). It registers as the child subreaper and reaps every orphan,
  so it is a sound container PID 1.

Worker-side code (:class:`WorkerLink`) is stdlib only; the supervisor uses psutil (a BentoML dependency) to find the
tree's processes, because circus puts every worker in a session of its own (no single process group to signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SOCKET_ENV = "RECSTACK_SUPERVISOR_SOCKET"
PREFIX = "recstack-serve:"
EXIT_STARTUP_FAILED = 3
EXIT_WORKER_DIED = 4


class WorkerLink:
    """A worker's connection to the supervisor: reports start-up, then stays open so the worker's death is seen."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @classmethod
    def connect(cls) -> WorkerLink | None:
        """The link when running under ``recstack-serve``; ``None`` under a bare ``bentoml serve``."""
        path = os.environ.get(SOCKET_ENV)
        if not path:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock)

    def ready(self) -> None:
        self._send(f"ready {os.getpid()}")

    def failed(self, reason: str) -> None:
        self._send(f"failed {os.getpid()} {' '.join(reason.split())}")

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone; it stops the tree either way
            self._sock.sendall(line.encode("utf-8", "replace") + b"\n")


@dataclass
class _Worker:
    sock: socket.socket
    buffer: bytes = b""
    pid: int | None = None
    ready: bool = False


@dataclass
class Supervisor:
    argv: Sequence[str]
    env: Mapping[str, str]
    url: str
    workers: int
    startup_timeout_s: float
    stop_timeout_s: float
    out: object = field(default=sys.stdout)

    def run(self) -> int:
        _become_subreaper()
        with tempfile.TemporaryDirectory(prefix="recstack-serve-") as tmp:
            path = str(Path(tmp) / "supervisor.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(64)
            listener.setblocking(False)
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_r, False)
            os.set_blocking(wake_w, False)
            caught: list[int] = []

            def on_signal(signum: int, _frame: object) -> None:
                caught.append(signum)

            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
            previous_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
            old_wakeup = signal.set_wakeup_fd(wake_w)
            try:
                env = {**self.env, SOCKET_ENV: path, "BENTOML_HOME": str(_private_home(self.env, Path(tmp)))}
                # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which stops the tree in order.
                child = subprocess.Popen(list(self.argv), env=env, start_new_session=True)
                try:
                    return self._loop(child, listener, wake_r, caught)
                finally:
                    self._stop_tree(child)
            finally:
                signal.set_wakeup_fd(old_wakeup)
                for s, handler in previous.items():
                    signal.signal(s, handler)
                signal.signal(signal.SIGCHLD, previous_chld)
                listener.close()
                os.close(wake_r)
                os.close(wake_w)

    def _say(self, message: str, error: bool = False) -> None:
        print(f"{PREFIX} {message}", file=sys.stderr if error else self.out, flush=True)

    def _loop(self, child: subprocess.Popen[bytes], listener: socket.socket, wake_r: int, caught: list[int]) -> int:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "listener")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        links: dict[int, _Worker] = {}
        serving = False
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if caught:
                self._say(f"{signal.Signals(caught[0]).name} received: stopping the server")
                return 0
            _reap_orphans(child.pid)
            code = child.poll()
            if code is not None:
                self._say(f"bentoml serve exited with {code}; stopping", error=True)
                return code or 1
            if not serving and time.monotonic() > deadline:
                up = sum(w.ready for w in links.values())
                self._say(
                    f"{up} of {self.workers} workers ready after {self.startup_timeout_s:g} s "
                    "(startup_timeout_s): stopping the server",
                    error=True,
                )
                return EXIT_STARTUP_FAILED
            timeout = None if serving else max(0.0, deadline - time.monotonic())
            for key, _ in selector.select(timeout):
                if key.data == "wake":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif key.data == "listener":
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    links[conn.fileno()] = _Worker(conn)
                    selector.register(conn, selectors.EVENT_READ, "worker")
                else:
                    worker = links[key.fd]
                    try:
                        data = worker.sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(worker.sock)
                        worker.sock.close()
                        del links[key.fd]
                        what = "after start-up" if worker.ready else "during start-up"
                        self._say(f"worker {worker.pid or '?'} exited {what}: stopping the server", error=True)
                        return EXIT_WORKER_DIED if worker.ready else EXIT_STARTUP_FAILED
                    worker.buffer += data
                    while b"\n" in worker.buffer:
                        line, worker.buffer = worker.buffer.split(b"\n", 1)
                        verb, _, rest = line.decode("utf-8", "replace").partition(" ")
                        pid, _, reason = rest.partition(" ")
                        worker.pid = int(pid) if pid.isdigit() else worker.pid
                        if verb == "failed":
                            self._say(f"worker {pid} failed at start-up: {reason}; stopping the server", error=True)
                            return EXIT_STARTUP_FAILED
                        if verb == "ready":
                            worker.ready = True
                            up = sum(w.ready for w in links.values())
                            self._say(f"worker {pid} ready ({up}/{self.workers})")
                            if up >= self.workers and not serving:
                                serving = True
                                self._say(f"ready on {self.url} ({self.workers} workers)")

    def _stop_tree(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM to every process of the tree, SIGKILL to what is left after ``stop_timeout_s``; reap them all."""
        import psutil

        me = psutil.Process()
        signalled: set[int] = set()
        if child.poll() is None:
            _signal(child.pid, signal.SIGTERM)  # the arbiter first: it must not respawn the workers it sees exit
            signalled.add(child.pid)
        deadline = time.monotonic() + self.stop_timeout_s
        while True:
            _reap_orphans(child.pid)
            left = _alive(_descendants(me))
            if not left and child.poll() is not None:
                break
            if time.monotonic() >= deadline:
                self._say(f"{len(left)} processes still running after {self.stop_timeout_s:g} s: killing them")
                for proc in left:
                    _signal(proc.pid, signal.SIGKILL)
                break
            for proc in left:  # workers, and any the arbiter spawned meanwhile
                if proc.pid not in signalled:
                    _signal(proc.pid, signal.SIGTERM)
                    signalled.add(proc.pid)
            time.sleep(0.02)
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal(child.pid, signal.SIGKILL)
            child.wait()
        end = time.monotonic() + 2
        while _alive(_descendants(me)) and time.monotonic() < end:
            _reap_orphans(child.pid)
            time.sleep(0.02)
        _reap_orphans(child.pid)
        self._say("stopped")


def _private_home(env: Mapping[str, str], tmp: Path) -> Path:
    """A BentoML home of this server's own whose ``models`` is the real model store. Every ``bentoml serve`` wipes
    ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so servers sharing a home erased each other's /metrics.
    """
    real = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()
    (real / "models").mkdir(parents=True, exist_ok=True)
    home = tmp / "bentoml"
    home.mkdir()
    (home / "models").symlink_to((real / "models").resolve(), target_is_directory=True)
    return home


def _descendants(proc: object) -> list:  # list[psutil.Process]
    import psutil

    try:
        return proc.children(recursive=True)  # type: ignore[attr-defined]
    except psutil.Error:
        return []


def _alive(procs: list) -> list:
    import psutil

    alive = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            continue
    return alive


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _reap_orphans(child_pid: int) -> None:
    """Collect exited orphans re-parented to us (subreaper / PID 1). Our direct child is ``Popen``'s to wait for."""
    import psutil

    for proc in psutil.Process().children():
        try:
            if proc.pid != child_pid and proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


def _become_subreaper() -> None:
    """Orphaned workers (their arbiter gone) are re-parented to us, so we can signal and reap them (Linux only)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
