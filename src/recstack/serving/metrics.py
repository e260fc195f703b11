"""Per-stage latency of the recommendation pipeline, exported on BentoML's Prometheus ``/metrics``.

The pipeline reports stage timings through a plain callback (:data:`StageObserver`), so the offline evaluator runs it
without Prometheus; the service passes :meth:`StageMetrics.observe`. Metrics go through ``bentoml.metrics`` because
BentoML runs prometheus_client in multiprocess mode and only its registry is scraped from ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

StageObserver = Callable[[str, float], None]
"""``observe(stage, seconds)``."""

STAGES = ("online_store", "user_vector", "retrieval", "content", "filter", "rerank", "total")
# Sub-millisecond resolution: the pipeline's stages are tens to hundreds of microseconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class StageMetrics:
    """Prometheus histograms ``recstack_stage_seconds{endpoint, stage}`` and counter ``recstack_user_source_total``.

    Create one per worker process (in the service's ``__init__``): Prometheus refuses a metric registered twice.
    """

    def __init__(self, namespace: str = "recstack") -> None:
        import bentoml

        self._stage = bentoml.metrics.Histogram(
            name=f"{namespace}_stage_seconds",
            documentation="Latency of one stage of the recommendation pipeline, seconds",
            labelnames=["endpoint", "stage"],
            buckets=BUCKETS,
        )
        self._source = bentoml.metrics.Counter(
            name=f"{namespace}_user_source_total",
            documentation="Recommendations by where the user representation came from",
            labelnames=["source"],
        )
        self._sources: dict[str, Any] = {}
        self._degraded = bentoml.metrics.Counter(
            name=f"{namespace}_degraded_total",
            documentation="Requests answered without the online store (unavailable or circuit open)",
            labelnames=["endpoint"],
        )
        self._reloads = bentoml.metrics.Counter(
            name=f"{namespace}_reloads_total",
            documentation="Bundle reloads by this worker: swapped, or refused (the old bundle kept serving)",
            labelnames=["arm", "outcome"],
        )
        self._impressions_dropped = bentoml.metrics.Counter(
            name=f"{namespace}_impressions_dropped_total",
            documentation="Impressions dropped because the buffer was full while Redis was unavailable",
        )
        self._dropped_seen = 0

    def observer(self, endpoint: str) -> StageObserver:
        # Labelled children resolved once: `labels()` takes a lock and a dict lookup on every call otherwise.
        children = {stage: self._stage.labels(endpoint=endpoint, stage=stage) for stage in STAGES}

        def observe(stage: str, seconds: float) -> None:
            child = children.get(stage)
            if child is None:
                child = children[stage] = self._stage.labels(endpoint=endpoint, stage=stage)
            child.observe(seconds)

        return observe

    def user_source(self, source: str) -> None:
        child = self._sources.get(source)
        if child is None:
            child = self._sources[source] = self._source.labels(source=source)
        child.inc()

    def degraded(self, endpoint: str) -> None:
        self._degraded.labels(endpoint=endpoint).inc()

    def reload(self, arm: str, outcome: str) -> None:
        self._reloads.labels(arm=arm or "-", outcome=outcome).inc()

    def impressions_dropped(self, total: int) -> None:
        """Bring the counter up to ``total`` (the impression log's own count)."""
        if total > self._dropped_seen:
            self._impressions_dropped.inc(total - self._dropped_seen)
            self._dropped_seen = total


def null_observer(stage: str, seconds: float) -> None:
    """The observer of offline runs: timings are dropped."""
