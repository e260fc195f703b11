"""A tiny HTTP client for the service, and the example requests the demo prints.

``send_examples(base_url)`` walks through what the service does (a known user, a cold user, an event that changes the
cold user's next answer, similar items, a bad request, readiness) and returns one readable block of text per example.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Exchange:
    """One request and its answer."""

    method: str
    path: str
    payload: dict[str, Any] | None
    status: int
    body: Any
    elapsed_ms: float


class RecstackClient:
    """Thin wrapper over ``httpx.Client``: one method per endpoint, answers returned as :class:`Exchange`."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, api_key: str | None = None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers)

    def __enter__(self) -> RecstackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Exchange:
        start = time.perf_counter()
        response = self._http.request(method, path, json=payload)
        elapsed = (time.perf_counter() - start) * 1e3
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return Exchange(method, path, payload, response.status_code, body, elapsed)

    def recommend(self, user_id: str, k: int = 10, **fields: Any) -> Exchange:
        return self.call("POST", "/recommend", {"user_id": user_id, "k": k, **fields})

    def similar_items(self, item_id: str, k: int = 10) -> Exchange:
        return self.call("POST", "/similar_items", {"item_id": item_id, "k": k})

    def event(self, user_id: str, item_id: str, event_type: str = "click", value: float = 1.0) -> Exchange:
        return self.call(
            "POST", "/events", {"user_id": user_id, "item_id": item_id, "event_type": event_type, "value": value}
        )

    def consent(self, user_id: str, analytics: bool = True, personalisation: bool = True) -> Exchange:
        return self.call(
            "POST",
            "/consent",
            {"user_id": user_id, "purposes": {"analytics": analytics, "personalisation": personalisation}},
        )

    def ready(self) -> Exchange:
        return self.call("GET", "/readyz")

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.ready().status == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        return False


def format_exchange(title: str, exchange: Exchange, max_items: int = 5) -> str:
    """A few readable lines: the request, the status and latency, and the answer (item lists as a short table)."""
    lines = [
        f"== {title}",
        f"{exchange.method} {exchange.path} {json.dumps(exchange.payload) if exchange.payload else ''}",
    ]
    lines.append(f"-> {exchange.status} in {exchange.elapsed_ms:.1f} ms")
    body = exchange.body
    if isinstance(body, dict):
        lists = {
            k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict) and "item_id" in v[0]
        }
        scalars = {k: v for k, v in body.items() if k not in lists}
        lines.append("   " + json.dumps(scalars)[:400])
        for name, items in lists.items():
            lines.append(f"   {name}:")
            for rank, item in enumerate(items[:max_items], start=1):
                title_text = str(item.get("title", ""))[:48]
                lines.append(
                    f"   {rank:>3}. {item.get('item_id', ''):>8}  {title_text:<48}  "
                    f"{item.get('score', 0.0):8.4f}  {item.get('stage', '')}"
                )
            if len(items) > max_items:
                lines.append(f"        ... {len(items) - max_items} more")
    else:
        lines.append("   " + json.dumps(body)[:400])
    return "\n".join(lines)


def send_examples(
    base_url: str,
    *,
    known_user: str,
    item_id: str,
    clicked_items: Sequence[str] = (),
    cold_user: str = "demo-new-user",
    k: int = 5,
    api_key: str | None = None,
) -> list[str]:
    """Send the example requests to a running service and return them, answered, as readable text blocks.

    ``known_user`` and ``item_id`` must exist in the served bundle; ``clicked_items`` (default: ``item_id``) are sent
    as the cold user's clicks to show ``/events`` changing the next ``/recommend``.
    """
    clicks = list(clicked_items) or [item_id]
    blocks = []
    with RecstackClient(base_url, api_key=api_key) as client:
        blocks.append(format_exchange("readiness (an admin key sees the details)", client.ready()))
        blocks.append(
            format_exchange(f"{known_user} before any consent: popularity only", client.recommend(known_user, k))
        )
        for user in (known_user, cold_user):
            blocks.append(
                format_exchange(f"{user} consents (opt-in: analytics, personalisation)", client.consent(user))
            )
        blocks.append(format_exchange(f"a known user ({known_user})", client.recommend(known_user, k)))
        blocks.append(
            format_exchange(
                "the same user on a Friday evening, no dramas",
                client.recommend(known_user, k, context={"hour": 21, "dow": 4}, exclude_categories=["Drama"]),
            )
        )
        blocks.append(format_exchange(f"a cold user ({cold_user}): popularity", client.recommend(cold_user, k)))
        for item in clicks:
            blocks.append(format_exchange(f"{cold_user} clicks {item}", client.event(cold_user, item)))
        blocks.append(
            format_exchange(f"{cold_user} again: folded in from recent clicks", client.recommend(cold_user, k))
        )
        blocks.append(format_exchange(f"items similar to {item_id}", client.similar_items(item_id, k)))
        blocks.append(
            format_exchange("a bad request (k out of range): 400 naming the field", client.recommend(known_user, 0))
        )
        blocks.append(format_exchange("an unknown item: 404", client.similar_items("no-such-item", k)))
    return blocks
