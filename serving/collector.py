"""The collector as its own BentoML service, for sites that scale event intake apart from recommendations:
``bentoml serve serving.collector:Collector`` (settings: ``configs/collector/default.yaml``, the key from
``$RECSTACK_HMAC_KEY`` or ``$RECSTACK_HMAC_KEY_FILE``). ``recstack-serve`` mounts the same app in the recommender
service by default, so a single deployment needs nothing from this file.

The same guards as the recommender's answer bad requests before the app sees them (413 bodies, 431 headers, JSON
errors naming the field, one metrics label for unknown paths).
"""

from __future__ import annotations

import bentoml

from recstack.collect.app import build_collector
from recstack.collect.notice import render_notice
from recstack.config import collect_settings, config_dir
from recstack.serving import http_guards
from recstack.serving.collector_mount import JSON_ROUTES, EventCounter

SETTINGS = collect_settings()
_NOTICE = render_notice(SETTINGS)
COLLECTOR = build_collector(
    SETTINGS,
    SETTINGS.vocabulary or str(config_dir() / "mappings" / "demographics.yaml"),
    EventCounter(),
    lambda: _NOTICE,
)
MAX_HEADER_BYTES = 16384
MAX_BODY_BYTES = 1_048_576  # a batch of 500 events


@bentoml.service(
    name="recstack-collector",
    workers=2,
    traffic={"timeout": 5},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/"]},
)
@bentoml.asgi_app(COLLECTOR.app(), path="/", name="collector")
class Collector:
    """Events, pixel, identify, consent, privacy notice: everything that enters recstack from a site."""


Collector.add_asgi_middleware(http_guards.ErrorShapeMiddleware)
Collector.add_asgi_middleware(
    http_guards.RequestGuardMiddleware, json_routes=JSON_ROUTES, max_header_bytes=MAX_HEADER_BYTES
)
Collector.add_asgi_middleware(http_guards.BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)

__all__ = ["COLLECTOR", "Collector"]
