"""The consent purposes a visitor or user can grant, with what each allows, and the cookie that remembers a
visitor's choice: one home for the collector (POST /consent), the recommender (personalisation) and the notice."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CONSENT_PURPOSES: Mapping[str, str] = MappingProxyType(
    {
        "analytics": "Store what you do here (product views, clicks, time spent, scroll depth) in our event store, "
        "to measure and improve the shop. Without it nothing you do is stored.",
        "personalisation": "Use your recent activity to choose the items under 'Recommended for you'. Without it "
        "you see what is popular.",
    }
)
PURPOSES: tuple[str, ...] = tuple(CONSENT_PURPOSES)

CONSENT_COOKIE = "rs_consent"
"""The readable cookie the collector sets with the visitor's choice (``analytics=1&personalisation=0``)."""

ROLE_STATE = "recstack_role"
"""``scope["state"]`` key holding the caller's role, set by the serving layer's access middleware."""
VISITOR = "visitor"
"""The role of a request without an API key on the routes a site's own pages call (events, consent, recommend): it
may act only as the visitor whose first-party cookie it carries, never name a user_id."""
