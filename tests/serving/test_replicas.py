"""Two service instances on different ports over one Redis, as replicas behind a load balancer run: what one is told
the other knows at once, and restarting one leaves the other answering (issue 16, replicated serving)."""

from __future__ import annotations

import signal
from pathlib import Path

from serving_support import Server, launch, stop_server, wait_ready


def test_an_event_posted_to_one_instance_changes_the_others_next_answer(server: Server, replica: Server) -> None:
    assert server.base_url != replica.base_url
    with server.client() as a, replica.client() as b:
        before = b.post("/recommend", json={"user_id": "walker", "k": 5}).json()
        assert before["user_source"] == "popularity"
        for item in ("i2", "i6", "i10"):
            answer = a.post("/events", json={"user_id": "walker", "item_id": item, "event_type": "click"})
            assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
        after = b.post("/recommend", json={"user_id": "walker", "k": 5}).json()
    assert after["user_source"] == "recent_activity"
    ids = [i["item_id"] for i in after["items"]]
    assert not {"i2", "i6", "i10"} & set(ids)  # the clicks reached the other instance: not recommended back
    assert all(int(i[1:]) % 4 == 2 for i in ids)  # the clicked items' group


def test_restarting_one_instance_does_not_disturb_the_other(
    tiny_bundle: Path, module_prefix: str, tmp_path: Path, server: Server, replica: Server
) -> None:
    """The first instance is stopped and started again while the replica is asked over and over: every answer of the
    replica is a 200 and not degraded, before, during and after."""
    args = [
        f"bundle={tiny_bundle}",
        "redis_url=redis://127.0.0.1:6379/0",
        f"redis_prefix={module_prefix}",
        f"collector.stream={module_prefix}collect",
        "redis_timeout_s=1.0",
    ]
    answers = []
    with replica.client() as b:

        def ask() -> None:
            response = b.post("/recommend", json={"user_id": "u3", "k": 5})
            answers.append((response.status_code, response.json().get("degraded")))

        ask()
        server.process.send_signal(signal.SIGTERM)  # the graceful stop an orchestrator sends
        while server.process.poll() is None:  # the replica is asked until the stopped one has exited
            ask()
        assert stop_server(server) == 0
        restarted = launch(args, tmp_path / "restarted.log")
        while not restarted.ready.is_set() and restarted.process.poll() is None:
            ask()  # ... and while the new one starts
        wait_ready(restarted)
        ask()
        with restarted.client() as a:  # the restarted instance answers from the same Redis
            assert a.post("/recommend", json={"user_id": "u3", "k": 5}).status_code == 200
    stop_server(restarted)
    assert len(answers) >= 3
    assert all(status == 200 and not degraded for status, degraded in answers), answers
