"""Schemathesis fuzzes every endpoint of the running service from its own OpenAPI schema (/docs.json): valid and
invalid bodies, a bounded number of examples per operation. No answer may be a 5xx, and every 4xx is JSON naming the
field.

(Hypothesis is driven per operation here rather than through ``schemathesis.pytest.from_fixture``, whose lazy
parametrisation fails on this pytest with ``'Function' object has no attribute '_nodeid'``.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from serving_support import Server

pytestmark = [pytest.mark.slow, pytest.mark.redis]

EXAMPLES = 25  # per operation and mode: keeps the whole fuzz well under a minute on a busy 2-core machine


def check(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=30)
    assert response.status_code < 500, (case.method, case.path, case.headers, case.body, response.text)
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: header -> list of values
        assert content_type.startswith("application/json"), (
            case.method,
            case.path,
            response.status_code,
            response.text,
        )
        body = response.json()
        assert isinstance(body, dict) and body.get("error") and isinstance(body.get("field"), str), body


def test_every_endpoint_fuzzed_no_5xx_and_4xx_name_the_field(server: Server) -> None:
    operations = []
    # the recommender's own schema, and the mounted collector's (recstack.collect.openapi)
    for document in ("/docs.json", "/collector/openapi.json"):
        schema = schemathesis.openapi.from_url(f"{server.base_url}{document}", timeout=30)
        operations += [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/recommend", "/similar_items", "/events", "/identify", "/consent", "/pixel.gif"} <= paths, paths
    fuzzed = set()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                check(case, server.base_url)

            try:
                fuzz()
            except Unsatisfiable:
                # No invalid input exists for an operation without parameters or body (GET /healthz, /metrics ...)
                assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
                continue
            fuzzed.add((operation.path, mode))
    for path in ("/recommend", "/similar_items", "/events", "/identify", "/consent"):
        assert {(path, GenerationMode.POSITIVE), (path, GenerationMode.NEGATIVE)} <= fuzzed, fuzzed
