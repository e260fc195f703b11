"""What a monitoring run measures and when it alerts: plain, frozen, checked settings (configs/monitor.yaml feeds them
through the CLI; nothing here knows Hydra)."""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MAX_K = 62  # positions are kept as bits of one BIGINT per impression (clicks, hits)


class MonitorError(ValueError):
    """A setting or an input the monitor cannot work with; the message says what to change."""


def _event_types(name: str, value: tuple[str, ...]) -> None:
    if not value or not all(isinstance(v, str) and v for v in value):
        raise MonitorError(f"{name}={list(value)!r}: give a non-empty list of event types, e.g. [click]")


@dataclass(frozen=True)
class MetricSpec:
    """How impressions are judged.

    * attribution: a click or conversion event carrying a ``request_id`` belongs to that impression (same user, not
      before it); one without (or with an id that is not that user's) belongs to the latest impression that showed
      the item to the user within ``attribution_window_ms`` before the event;
    * outcome: the relevant set of an impression is the distinct items the user interacted with
      (``outcome_events``) within ``outcome_window_ms`` after it: what online MAP@K and NDCG@K rank against.
    """

    ks: tuple[int, ...] = (5, 10)
    attribution_window_ms: int = 30 * MINUTE_MS
    click_events: tuple[str, ...] = ("click",)
    conversion_events: tuple[str, ...] = ("add_to_cart", "purchase")
    outcome_events: tuple[str, ...] = ("click", "add_to_cart", "purchase", "rating")
    outcome_window_ms: int = DAY_MS
    catalogue_size: int | None = None

    def __post_init__(self) -> None:
        ks = tuple(sorted(set(self.ks)))
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K for k in ks):
            raise MonitorError(f"ks={list(self.ks)!r}: give whole numbers between 1 and {MAX_K}, e.g. [5, 10]")
        object.__setattr__(self, "ks", ks)
        for name in ("attribution_window_ms", "outcome_window_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MonitorError(f"{name}={value!r}: give a positive number of milliseconds")
        _event_types("click_events", self.click_events)
        _event_types("conversion_events", self.conversion_events)
        _event_types("outcome_events", self.outcome_events)
        size = self.catalogue_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise MonitorError(f"catalogue_size={size!r}: give the number of items (>= 1), or null when unknown")

    @property
    def max_k(self) -> int:
        return max(self.ks)

    @property
    def attributed_events(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.click_events, *self.conversion_events)))


@dataclass(frozen=True)
class AlertRules:
    """When a day is bad enough to fail the run (exit status :data:`~recstack.monitoring.alerts.ALERT_EXIT_CODE`).

    * ``metric`` (online ``map@10``) more than ``max_drop`` (a fraction) below its mean over the previous
      ``reference_days`` days, judged only for a series with at least ``min_reference_days`` such days, at least
      ``min_eligible`` judged impressions that day, and a complete outcome window;
    * a population stability index of the served scores or of the served items' popularity above ``psi_threshold``
      against the previous ``reference_days`` days (both sides with at least ``min_impressions`` impressions).
    """

    metric: str = "map@10"
    max_drop: float = 0.2
    reference_days: int = 7
    min_reference_days: int = 1
    min_eligible: int = 100
    psi_threshold: float = 0.2
    psi_bins: int = 10
    min_impressions: int = 100

    def __post_init__(self) -> None:
        if not 0 < float(self.max_drop) < 1:
            raise MonitorError(f"alerts.max_drop={self.max_drop!r}: give a fraction between 0 and 1, e.g. 0.2")
        if float(self.psi_threshold) <= 0:
            raise MonitorError(f"alerts.psi_threshold={self.psi_threshold!r}: give a positive number (0.2 is usual)")
        for name, low in (("reference_days", 1), ("min_reference_days", 1), ("psi_bins", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise MonitorError(f"alerts.{name}={value!r}: give a whole number >= {low}")
        if self.min_reference_days > self.reference_days:
            raise MonitorError(
                f"alerts.min_reference_days={self.min_reference_days} exceeds reference_days={self.reference_days}"
            )
        for name in ("min_eligible", "min_impressions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MonitorError(f"alerts.{name}={value!r}: give a whole number >= 0")
        if "@" not in self.metric or self.metric.split("@")[0] not in ("map", "ndcg"):
            raise MonitorError(f"alerts.metric={self.metric!r}: give map@K or ndcg@K, e.g. map@10")


@dataclass(frozen=True)
class ABSpec:
    """The per-arm comparisons: CTR@``ctr_k`` by a two-proportion z-test, ``metric`` by a bootstrap over users
    (``samples`` resamples, seeded); a difference is significant at ``alpha``. ``control``: the arm every other arm
    is compared with (None: the first arm by name)."""

    alpha: float = 0.05
    ctr_k: int = 10
    metric: str = "map@10"
    samples: int = 1000
    seed: int = 0
    control: str | None = None

    def __post_init__(self) -> None:
        if not 0 < float(self.alpha) < 1:
            raise MonitorError(f"ab.alpha={self.alpha!r}: give a significance level between 0 and 1, e.g. 0.05")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 100:
            raise MonitorError(f"ab.samples={self.samples!r}: give at least 100 bootstrap resamples")
        if "@" not in self.metric or self.metric.split("@")[0] not in ("map", "ndcg"):
            raise MonitorError(f"ab.metric={self.metric!r}: give map@K or ndcg@K, e.g. map@10")
