"""The recent-activity list entry format, shared by the collector (writer) and the recommender (reader).

One Redis list per subject pseudonym (``<recent_prefix><pseudonym>``), newest first, bounded by LTRIM and expiring
with a TTL; each entry is the JSON array ``[item_id, event_type, value, timestamp_s]``.
"""

from __future__ import annotations

import json


def encode_recent(item_id: str, event_type: str, value: float, timestamp_s: int) -> str:
    return json.dumps([item_id, event_type, value, timestamp_s], separators=(",", ":"))


def decode_recent(raw: str | bytes) -> tuple[str, str, float, int]:
    item_id, event_type, value, timestamp = json.loads(raw)
    return str(item_id), str(event_type), float(value), int(timestamp)
