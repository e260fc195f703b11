"""The collector as part of the recommender service: built from the service's settings, counted on its /metrics.

recstack.collect stays free of BentoML; this is where its counter meets ``bentoml.metrics`` (the registry BentoML
scrapes in multiprocess mode) and where the privacy notice is attached.
"""

from __future__ import annotations

from recstack.collect.app import Collector, build_collector
from recstack.serving.settings import ServeSettings

JSON_ROUTES: tuple[str, ...] = ("/events", "/identify", "/consent")
PATHS: tuple[str, ...] = (*JSON_ROUTES, "/pixel.gif", "/privacy", "/collector/openapi.json", "/users/")


class EventCounter:
    """``recstack_collect_events_total{outcome, reason}``: accepted, dropped (no consent, erased) and rejected events.
    Created on first use, inside the worker (a metric registered at import would be registered twice)."""

    def __init__(self) -> None:
        self._counter = None
        self._children: dict[tuple[str, str], object] = {}

    def __call__(self, outcome: str, reason: str, n: int) -> None:
        child = self._children.get((outcome, reason))
        if child is None:
            if self._counter is None:
                import bentoml

                self._counter = bentoml.metrics.Counter(
                    name="recstack_collect_events_total",
                    documentation="Events received by the collector, by outcome (accepted / dropped / rejected) and reason",
                    labelnames=["outcome", "reason"],
                )
            child = self._children[(outcome, reason)] = self._counter.labels(outcome=outcome, reason=reason)
        child.inc(n)  # type: ignore[attr-defined]


def vocabulary_path(settings: ServeSettings) -> str:
    from recstack.config import config_dir

    return settings.collector.vocabulary or str(config_dir() / "mappings" / "demographics.yaml")


def build(settings: ServeSettings) -> Collector:
    """The collector of this service (reads the pseudonymisation key: a clear error without one)."""
    from recstack.collect.notice import render_notice

    notice_html = render_notice(settings.collector)
    return build_collector(settings.collector, vocabulary_path(settings), EventCounter(), lambda: notice_html)


def access_middlewares(settings: ServeSettings) -> list[tuple[type, dict]]:
    """API keys and roles, then rate limits (when on): ``(middleware class, options)``, outermost first. The rate
    limiter's Prometheus counter is created here, once per process, and shared by both uses."""
    from recstack.serving import access, rate_limit

    layers: list[tuple[type, dict]] = [(access.AccessMiddleware, {"policy": settings.access_policy()})]
    if settings.rate_limit:
        outcomes = rate_limit.prometheus_outcomes()
        layers.append(
            (rate_limit.RateLimitMiddleware, {"policy": settings.rate_limit_policy(), "on_outcome": outcomes})
        )
    return layers
