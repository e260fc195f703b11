"""Impressions: every ``/recommend`` answer recorded in the lake, off the request path.

A request only appends one small dict to this worker's buffer (no I/O, no await); a background task sends the buffer
every ``flush_s`` as ONE stream entry (``XADD`` of table ``impressions``, recstack.collect.records) into the
collector's stream, where ``recstack-collect consume`` stores it in the lake with the events, exactly once. So the
request pays a ``uuid4`` and a list append, and Redis one command per flush per worker, whatever the traffic.

Nothing is lost quietly: while Redis is unavailable the rows wait in the buffer (the next flush retries them); past
``max_buffer`` rows the oldest are dropped and counted (``dropped``, exported by /metrics as
``recstack_impressions_dropped``), because a serving worker must not grow without bound during a long outage. A worker
stopped cleanly sends what it holds first (:meth:`ImpressionLog.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from recstack.collect.records import encode_entry

logger = logging.getLogger(__name__)

Send = Callable[[dict[bytes, bytes]], Awaitable[Any]]
"""Sends one stream entry's fields; returns None when Redis is unavailable (RedisOnlineStore.call_async's contract)."""


class ImpressionLog:
    """One worker's impression buffer and its background sender."""

    def __init__(self, send: Send, *, flush_s: float, max_buffer: int, max_batch: int = 5000) -> None:
        self._send = send
        self.flush_s = flush_s
        self.max_batch = max_batch
        self._rows: deque[dict] = deque(maxlen=max_buffer)
        self.recorded = 0
        self.sent = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, row: dict) -> None:
        """Queue one impression row (IMPRESSIONS_SCHEMA columns, ``received_ts`` in epoch ms). Never blocks."""
        if len(self._rows) == self._rows.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self._rows.append(row)
        self.recorded += 1

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def flush(self) -> int:
        """Send what is buffered, in entries of at most ``max_batch`` rows; rows sent (the rest stay on failure)."""
        sent = 0
        while self._rows:
            n = min(len(self._rows), self.max_batch)
            batch = [self._rows[i] for i in range(n)]
            if await self._send(encode_entry("impressions", batch)) is None:
                break  # Redis unavailable: keep them for the next flush
            for _ in range(n):
                self._rows.popleft()
            sent += n
        self.sent += sent
        return sent

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("impressions: flush failed; the rows stay buffered")

    def start(self) -> None:
        """Start the sender on the running event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="recstack-impressions")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the sender and send what is left (at most ``timeout_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout_s)


def impression_row(
    *,
    request_id: str,
    user_id: str | None,
    anonymous: bool,
    items: list[str],
    scores: list[float],
    stage: str,
    user_source: str,
    personalised: bool,
    bundle: str,
    experiment: str | None,
    arm: str | None,
    now_ms: int | None = None,
) -> dict:
    """One row of the lake's ``impressions`` table (recstack.data.lake.IMPRESSIONS_SCHEMA)."""
    return {
        "request_id": request_id,
        "user_id": user_id,
        "anonymous": anonymous,
        "items": items,
        "scores": scores,
        "stage": stage,
        "user_source": user_source,
        "personalised": personalised,
        "bundle": bundle,
        "experiment": experiment,
        "arm": arm,
        "received_ts": int(time.time() * 1000) if now_ms is None else now_ms,
    }
