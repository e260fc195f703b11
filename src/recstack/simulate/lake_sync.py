"""Waiting until the lake holds a run: every impression it was served and every event it sent.

Events are in the collector's stream once ``POST /events`` has answered; impressions reach it later, when each serving
worker flushes its buffer (recstack.serving.impressions, every ``impressions_flush_s``). So: read the stream's end,
wait until the lake consumer has stored everything up to it (recstack.collect.consumer.wait_until_stored), and check
the lake for the run's request ids; repeat until all are there. The first end read is after the last event was
accepted, so once the impressions are found the events are stored too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from recstack.collect.consumer import stream_end, wait_until_stored
from recstack.collect.settings import CollectSettings
from recstack.data.lake import parts
from recstack.simulate.traffic import SimulationError


def _redacted(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def impressions_in_lake(lake: str | Path, request_ids: Sequence[str]) -> int:
    """How many of ``request_ids`` the lake's impressions table holds (DuckDB over its Parquet files)."""
    files = parts(lake, "impressions")
    if not files:
        return 0
    con = duckdb.connect()
    try:
        con.register("wanted", pa.table({"request_id": pa.array(list(request_ids), pa.string())}))
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        return int(
            con.execute(f"""
                SELECT count(DISTINCT request_id) FROM read_parquet([{listed}], union_by_name=true)
                WHERE request_id IN (SELECT request_id FROM wanted)
            """).fetchone()[0]
        )
    finally:
        con.close()


def wait_for_lake(settings: CollectSettings, request_ids: Sequence[str], timeout_s: float) -> None:
    """Until the consumer has stored the run (:class:`SimulationError` after ``timeout_s``, saying what is missing)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30)
    where = _redacted(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    found = 0
    try:
        while True:
            end = stream_end(client, settings.names)
            if end is None:
                raise SimulationError(
                    f"the collector's stream {settings.names.stream!r} does not exist on {where}: the "
                    "service writes another stream (set collector.stream / collector.redis_url as the service has them)"
                )
            left = max(deadline - time.monotonic(), 0.0)
            if wait_until_stored(client, settings.names, end, left):
                found = impressions_in_lake(settings.lake, request_ids)
                if found == len(set(request_ids)):
                    return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)  # the workers flush their impressions every impressions_flush_s
    except redis.ConnectionError as error:
        raise SimulationError(f"cannot reach the collector's Redis at {where}: {error}") from None
    finally:
        client.close()
    raise SimulationError(
        f"after {timeout_s:.0f} s the lake {settings.lake} holds {found} of the run's {len(set(request_ids))} "
        f"impressions: is `recstack-collect consume` running on stream {settings.names.stream!r} with "
        f"collector.lake={settings.lake}, and does the service record impressions (impressions=true)?"
    )
