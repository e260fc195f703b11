"""Test keys on the shared Redis (127.0.0.1:6379, database 0), deleted after the test that wrote them."""

from __future__ import annotations

import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def delete_keys(prefix: str) -> None:
    """Delete every key that starts with ``prefix``."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
