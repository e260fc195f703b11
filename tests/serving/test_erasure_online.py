"""Erasure reaches serving at once: after DELETE /users/{id}, every worker answers that user with popularity only (no
trained vector, no seen-history, no recent activity), and their online keys are gone from Redis."""

from __future__ import annotations

import redis
from serving_support import Server


def test_erased_user_gets_popularity_from_every_worker(server: Server) -> None:
    with server.client() as http:
        before = http.post("/recommend", json={"user_id": "u3", "k": 5}).json()
        assert before["user_source"] == "trained" and before["personalised"] is True
        http.post("/events", json={"user_id": "u3", "item_id": "i7", "event_type": "click"})
        assert http.delete("/users/u3").status_code == 204
        # 20 requests over fresh connections: both workers answer (the tombstone is read per request, not cached)
        for _ in range(20):
            with server.client() as fresh:
                after = fresh.post("/recommend", json={"user_id": "u3", "k": 5, "exclude_seen": False}).json()
            assert after["personalised"] is False and after["user_source"] == "popularity", after
        popular = http.post("/recommend", json={"k": 5}).json()
    assert [i["item_id"] for i in after["items"]] == [i["item_id"] for i in popular["items"]]
    keys = [k.decode() for k in redis.Redis().scan_iter(match="*") if b"recstack-test" in k]
    from serving_support import TEST_HMAC_KEY

    from recstack.collect.pseudonymise import Pseudonymiser

    subject = Pseudonymiser(TEST_HMAC_KEY.encode()).user("u3")
    assert not [k for k in keys if k.endswith(subject) and ":erased" not in k]
