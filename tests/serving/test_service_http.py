"""The real BentoML service on loopback with the real Redis: endpoints, parity with the offline pipeline, events,
bad input (always a 4xx JSON naming the field, never a 500), readiness, metrics and the OpenAPI page."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from serving_support import Server

from recstack.bundle.reader import Bundle
from recstack.offline.topk import offline_topk
from recstack.serving.pipeline import Pipeline, Query

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_recommend_known_user(server: Server) -> None:
    with server.client() as http:
        answer = http.post("/recommend", json={"user_id": "u3", "k": 4, "context": {"hour": 20, "dow": 5}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user_source"] == "trained" and not body["degraded"] and len(body["items"]) == 4
    assert {"item_id", "title", "score", "stage"} <= set(body["items"][0]) and body["items"][0]["stage"] == "rerank"


def test_service_equals_offline_pipeline_for_50_users(server: Server, tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    pipeline = Pipeline.from_bundle(bundle)
    users = [f"u{u}" for u in range(48)] + ["cold-a", "cold-b"]
    with server.client() as http:
        for user in users:
            body = {"user_id": user, "k": 10, "context": {"hour": 9, "dow": 2}}
            served = http.post("/recommend", json=body).json()
            offline = pipeline.recommend(Query(user_id=user, k=10, hour=9, dow=2))
            assert [i["item_id"] for i in served["items"]] == [str(pipeline.item_ids[i]) for i in offline.items], user
            np.testing.assert_allclose([i["score"] for i in served["items"]], offline.scores, rtol=1e-5, atol=1e-6)
    # and offline_topk (what recstack-evaluate calls) is the same function
    topk = offline_topk(pipeline, np.arange(48), 10, rerank=True, hour=9, dow=2)
    assert [str(pipeline.item_ids[i]) for i in topk[5]] == [
        str(pipeline.item_ids[i]) for i in pipeline.recommend(Query(user_id="u5", k=10, hour=9, dow=2)).items
    ]


def test_event_changes_next_recommendation_of_a_new_user(server: Server) -> None:
    with server.client() as http:
        before = http.post("/recommend", json={"user_id": "newcomer", "k": 5}).json()
        assert before["user_source"] == "popularity"
        for item in ("i2", "i6", "i10"):
            answer = http.post("/events", json={"user_id": "newcomer", "item_id": item, "event_type": "click"})
            assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
        after = http.post("/recommend", json={"user_id": "newcomer", "k": 5}).json()
    assert after["user_source"] == "recent_activity"
    ids = [i["item_id"] for i in after["items"]]
    assert ids != [i["item_id"] for i in before["items"]]
    assert not {"i2", "i6", "i10"} & set(ids)  # just-clicked items are not recommended back
    assert all(int(i[1:]) % 4 == 2 for i in ids)  # the clicked items' group


def test_similar_items(server: Server) -> None:
    with server.client() as http:
        body = http.post("/similar_items", json={"item_id": "i3", "k": 3}).json()
    assert body["title"] and len(body["embedding"]) == 3 and len(body["text"]) == 3
    assert "i3" not in [i["item_id"] for i in body["embedding"] + body["text"]]


@pytest.mark.parametrize(
    ("route", "payload", "status", "field"),
    [
        ("/recommend", {"user_id": "u1", "k": 0}, 400, "k"),
        ("/recommend", {"user_id": "u1", "k": 101}, 400, "k"),
        ("/recommend", {"user_id": "u1", "k": "ten"}, 400, "k"),
        ("/recommend", {"user_id": "u1", "favourite": "x"}, 400, "favourite"),
        ("/recommend", {"user_id": "u1", "include_categories": ["NoSuchGenre"]}, 400, "include_categories"),
        ("/recommend", {"user_id": "u1", "context": {"hour": 99}}, 400, "context.hour"),
        # no model reads a device: like any unknown field it is refused by name, never silently ignored
        ("/recommend", {"user_id": "u1", "context": {"device": "tv"}}, 400, "context.device"),
        ("/similar_items", {"item_id": "i999"}, 404, "item_id"),
        ("/similar_items", {"item_id": "i1", "k": -1}, 400, "k"),
        ("/events", {"user_id": "u1", "item_id": "i1", "event_type": "rating", "value": 99}, 400, "value"),
        ("/events", {"events": [{"user_id": "u1", "event_type": "click"}]}, 400, "events[0].item_id"),
        ("/events", {"user_id": "u1", "item_id": "i1", "event_type": "teleport"}, 400, "event_type"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    server: Server, route: str, payload: dict, status: int, field: str
) -> None:
    with server.client() as http:
        answer = http.post(route, json=payload)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert isinstance(body, dict) and body["error"] and body["field"] == field, body


def test_malformed_and_oversized_bodies(server: Server) -> None:
    headers = {"content-type": "application/json"}
    with server.client() as http:
        # (an empty body is BentoML's {}: a request with no user and no cookie, answered with popularity)
        for raw in (b"not json", b"[1, 2]", b'{"user_id": "u1", "k": 1e400}'):
            answer = http.post("/recommend", content=raw, headers=headers)
            assert 400 <= answer.status_code < 500, (raw, answer.status_code, answer.text)
        huge = b'{"user_id": "' + b"a" * 200_000 + b'"}'
        answer = http.post("/recommend", content=huge, headers=headers)
        assert answer.status_code == 413 and answer.json()["field"] == "body"

        def chunks():  # no content-length: the limit is enforced while reading
            yield b'{"user_id": "'
            for _ in range(20):
                yield b"a" * 10_000
            yield b'"}'

        answer = http.post("/recommend", content=chunks(), headers=headers)
        assert answer.status_code == 413


def test_unknown_user_is_a_cold_start_not_an_error(server: Server) -> None:
    with server.client() as http:
        answer = http.post("/recommend", json={"user_id": "never-seen", "context": {"segment": {"gender": "F"}}})
    assert answer.status_code == 200 and answer.json()["user_source"] == "segment_popularity"


def test_health_readiness_metrics_openapi(server: Server) -> None:
    with server.client() as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 200
        state = ready.json()
        assert state["status"] == "ready" and state["online_store"]["available"] and state["model"]
        http.post("/recommend", json={"user_id": "u1"})
        metrics = http.get("/metrics").text
        for stage in ("online_store", "user_vector", "retrieval", "rerank", "total"):
            assert f'endpoint="recommend",le="0.001",stage="{stage}"' in metrics
        spec = http.get("/docs.json").json()
    for route in ("/recommend", "/similar_items"):
        assert route in spec["paths"]
    assert "RecommendRequest" in str(spec)


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/plain", b'{"user_id": "u1"}'),
        ("application/x-www-form-urlencoded", b"user_id=u1&item_id=i1&event_type=click"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("", b'{"user_id": "u1"}'),
    ],
)
def test_json_endpoints_refuse_other_content_types(server: Server, content_type: str, raw: bytes) -> None:
    with server.client() as http:
        for route in ("/recommend", "/similar_items", "/events"):
            headers = {"content-type": content_type} if content_type else {}
            request = http.build_request("POST", route, content=raw, headers=headers)
            if not content_type:
                request.headers.pop("content-type", None)
            answer = http.send(request)
            assert answer.status_code == 415, (route, answer.text)
            assert answer.json()["field"] == "content-type"
        ok = http.post(
            "/recommend", content=b'{"user_id": "u1"}', headers={"content-type": "application/json; charset=utf-8"}
        )
        assert ok.status_code == 200


def test_oversized_headers_get_431(server: Server) -> None:
    with server.client() as http:
        answer = http.post("/recommend", json={"user_id": "u1"}, headers={"x-padding": "a" * 32 * 1024})
        assert answer.status_code == 431 and answer.json()["field"] == "headers"
        assert http.post("/recommend", json={"user_id": "u1"}, headers={"x-padding": "a" * 1024}).status_code == 200


def test_unknown_paths_are_one_metrics_label_and_a_json_404(server: Server) -> None:
    import uuid

    paths = [f"/probe-{uuid.uuid4().hex[:12]}" for _ in range(50)]
    # under BentoML's Mount("/static_content"), which matches any path below it: only its real files are known
    paths += [f"/static_content/{uuid.uuid4()}" for _ in range(5)]
    with server.client() as http:
        for path in paths:
            answer = http.get(path) if len(path) % 2 else http.post(path, json={})
            assert answer.status_code == 404 and answer.json()["field"] == "path", answer.text
        assert http.get("/static_content/swagger-ui.css").status_code == 200  # a real file is still served
        metrics = http.get("/metrics").text
    assert not any(path in metrics for path in paths)
    assert 'endpoint="/{unknown}"' in metrics
    assert 'endpoint="/recommend"' in metrics  # known paths keep their own label


def test_client_errors_are_one_info_line_without_traceback(server: Server) -> None:
    marker = "no-such-field-" + "x" * 8
    with server.client() as http:
        assert http.post("/recommend", json={"user_id": "u1", marker: 1}).status_code == 400
        assert http.post("/similar_items", json={"item_id": "i9999"}).status_code == 404
        assert http.post("/recommend", content=b"nope", headers={"content-type": "text/plain"}).status_code == 415
        # a client-controlled newline in the path must not start a log line of its own
        assert http.get("/forged%0AINFO%20fake").status_code == 404
    expected = ("400 POST '/recommend'", "404 POST '/similar_items'", "415 POST '/recommend'", "fake")
    deadline = time.monotonic() + 30  # the lines come from either worker's output: wait for them, not a fixed time
    log = server.output()
    while not all(text in log for text in expected) and time.monotonic() < deadline:
        time.sleep(0.1)
        log = server.output()
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1 and "INFO" in lines[0] and "400 POST '/recommend'" in lines[0], lines
    assert "404 POST '/similar_items'" in log and "415 POST '/recommend'" in log
    forged = [line for line in log.splitlines() if "fake" in line]
    assert forged and all("404 GET" in line for line in forged), forged  # escaped: one line, not two
    assert "Traceback" not in log and "ERROR" not in log


def test_no_user_and_no_cookie_is_popularity_not_personalised(server: Server) -> None:
    with server.client() as http:
        answer = http.post("/recommend", json={"k": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["personalised"] is False and answer.json()["user_source"] == "popularity"
    assert "/" not in answer.json()["model"]  # the bundle's name and digest, never the server's filesystem path
