"""The collector's OpenAPI document (``GET /collector/openapi.json``), generated from the same pydantic models that
validate requests, so clients and the fuzz test (schemathesis) see exactly what the collector accepts."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from recstack.collect.events import EventBatch, EventIn

PATH = "/collector/openapi.json"


def collector_openapi(max_batch: int, identify: type, consent: type) -> dict:
    """OpenAPI 3.0 for /events, /pixel.gif, /identify and /consent."""
    _, top = models_json_schema(
        [(m, "validation") for m in (EventIn, EventBatch, identify, consent)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = top.get("$defs", {})
    schemas["EventBatch"]["properties"]["events"]["maxItems"] = max_batch

    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    def json_body(schema: dict) -> dict:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    error = {"description": "a client error naming the field", "content": {"application/json": {}}}
    accepted = {"description": "accepted (events without analytics consent are dropped and counted)"}
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
        for name, kind in (("e", "string"), ("i", "string"), ("u", "string"), ("v", "number"), ("tz", "integer"))
    ]
    paths = {
        "/events": {
            "post": {
                "summary": "one event or a batch (all or nothing)",
                "requestBody": json_body({"oneOf": [ref("EventIn"), ref("EventBatch")]}),
                "responses": {"202": accepted, "400": error, "413": error, "415": error, "503": error},
            }
        },
        "/pixel.gif": {
            "get": {
                "summary": "the 1x1 tracking pixel; reads or sets the visitor cookie",
                "parameters": query,
                "responses": {"200": {"description": "image/gif"}},
            }
        },
        "/identify": {
            "post": {
                "summary": "link this visitor to a signed-in user",
                "requestBody": json_body(ref(identify.__name__)),
                "responses": {"202": accepted, "400": error, "415": error, "503": error},
            }
        },
        "/consent": {
            "post": {
                "summary": "record a consent choice (opt-in per purpose)",
                "requestBody": json_body(ref(consent.__name__)),
                "responses": {"200": {"description": "the stored choice"}, "400": error, "409": error, "503": error},
            },
            "get": {
                "summary": "the current consent choice",
                "parameters": [{"name": "user_id", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the stored choice"}, "503": error},
            },
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "recstack collector", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
