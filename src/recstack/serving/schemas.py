"""Request and response bodies of the HTTP service, with the limits that keep bad input a 4xx and never a 500.

Every request model forbids unknown fields and validates strictly (``"10"`` is not an int), so a typo in a field name
or a wrong type is reported by name instead of being silently ignored or coerced.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_K = 100
MAX_ID_LENGTH = 128
MAX_CATEGORIES = 64

_REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)

Identifier = Field(min_length=1, max_length=MAX_ID_LENGTH)


class Context(BaseModel):
    """What the caller knows about the moment of the request: ``hour`` and ``dow`` are re-ranker features, ``segment``
    picks a cold user's popularity ranking. Nothing else is accepted: there is no ``device`` (no model uses one), and
    like any unknown field it is a 400 naming it, so a client never believes it steers the answer."""

    model_config = _REQUEST_CONFIG

    hour: int | None = Field(default=None, ge=0, le=23, description="hour of day 0-23 (UTC if omitted: now)")
    dow: int | None = Field(default=None, ge=0, le=6, description="day of week, Monday=0 (UTC if omitted: now)")
    segment: dict[str, str] | None = Field(
        default=None,
        max_length=8,
        description="demographics of a cold user, e.g. {'gender': 'F', 'age': '25'}: picks the popularity segment",
    )

    @field_validator("segment")
    @classmethod
    def _short_segment_values(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            for key, val in value.items():
                if len(key) > 32 or len(val) > 64:
                    raise ValueError("segment keys are at most 32 characters and values at most 64")
        return value


SEGMENT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
"""A segment's name as rules declare it (recstack.profiles.rules.NAME)."""


class SegmentTargeting(BaseModel):
    """``segment`` of ``/recommend``: steer the answer by the items popular in a rule-based segment (its members'
    most used items of the last 30 days, from the last ``recstack-segments run``)."""

    model_config = _REQUEST_CONFIG

    name: str = Field(pattern=SEGMENT_NAME_PATTERN, description="a segment listed by GET /segments")
    mode: Literal["restrict", "boost"] = Field(
        default="boost",
        description="restrict: only the segment's popular items (at most 20, so possibly fewer than k); boost: add "
        "weight x the item's popularity in the segment (0..1) to the z-scored final score",
    )
    weight: float = Field(default=1.0, ge=0, le=10, description="the boost's size (boost mode only)")


class RecommendRequest(BaseModel):
    """``POST /recommend``: what should this user see now."""

    model_config = _REQUEST_CONFIG

    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="the user; omitted: the visitor cookie set by the collector (pixel, /events, /consent)",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"number of items, 1..{MAX_K}")
    context: Context | None = None
    exclude_seen: bool = Field(default=True, description="drop items the user interacted with (training + recent)")
    include_categories: list[str] | None = Field(
        default=None, max_length=MAX_CATEGORIES, description="keep only items in at least one of these categories"
    )
    exclude_categories: list[str] | None = Field(
        default=None, max_length=MAX_CATEGORIES, description="drop items in any of these categories"
    )
    segment: SegmentTargeting | None = Field(
        default=None, description="restrict to or boost the items popular in a segment (GET /segments lists them)"
    )


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float
    stage: Literal["rerank", "retrieval", "popularity", "embedding", "text"] = Field(
        description="the stage whose score ordered this item"
    )


class RecommendResponse(BaseModel):
    user_id: str
    user_source: Literal["trained", "recent_activity", "popularity", "segment_popularity"] = Field(
        description="where the user representation came from"
    )
    items: list[RecommendedItem]
    model: str = Field(description="the bundle (tag or path) that answered")
    degraded: bool = Field(description="true when the online store was unavailable and the bundle answered alone")
    personalised: bool = Field(
        default=True,
        description="false: no consent to personalisation, or an erased user; the items are popularity only",
    )
    request_id: str = Field(
        default="",
        description="this answer's id: send it with the click or purchase it leads to (POST /events request_id)",
    )
    experiment: str | None = Field(default=None, description="the A/B experiment running, if any")
    arm: str | None = Field(default=None, description="the user's arm in that experiment")


class SimilarItemsRequest(BaseModel):
    """``POST /similar_items``: nearest neighbours of one item."""

    model_config = _REQUEST_CONFIG

    item_id: str = Identifier
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"number of neighbours per kind, 1..{MAX_K}")


class SimilarItemsResponse(BaseModel):
    item_id: str
    title: str
    embedding: list[RecommendedItem] = Field(description="neighbours by collaborative item embedding")
    text: list[RecommendedItem] | None = Field(description="neighbours by BERT title embedding (null: not in bundle)")
    model: str


MAX_TITLE_LENGTH = 512
MAX_TAGS = 64
MAX_LABEL_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 4096
ITEM_ID_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
"""An item id: printable, no control characters, no leading or trailing whitespace (ids are matched exactly)."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ItemUpsertRequest(BaseModel):
    """``POST /items`` (admin): add an item to the catalogue, or change one (an existing ``item_id`` is updated).

    The text the service encodes is the catalogue's (title, "Genres: ...", "Year: ...", "Tags: ...", then the
    description), so a new item is described like the trained ones. ``title`` and ``categories`` must be given but may be empty: an item
    without any text still gets a vector (the catalogue's mean direction, "an average item"). Unknown categories are
    accepted (they become filterable categories from then on)."""

    model_config = _REQUEST_CONFIG

    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ITEM_ID_PATTERN, description="the item")
    title: str = Field(max_length=MAX_TITLE_LENGTH, description="its title ('' allowed)")
    categories: list[Label] = Field(
        max_length=MAX_CATEGORIES, description="its categories, e.g. ['Comedy'] ([] allowed)"
    )
    tags: list[Label] = Field(default_factory=list, max_length=MAX_TAGS, description="free-form tags")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH, description="a short description")
    year: int | None = Field(default=None, ge=1800, le=2200, description="release year, as the catalogue has it")


class ItemUpsertResponse(BaseModel):
    item_id: str
    created: bool = Field(description="true: the item is new to the served catalogue (201); false: it was updated")
    version: str = Field(description="the upsert's version (its Redis log id); later upserts have larger ones")
    recommendable: bool = Field(description="true: the item is a retrieval candidate of this server now")
    neighbours: list[str] = Field(description="its nearest catalogue items by text, best first (at most 5)")
    model: str


class ReloadRequest(BaseModel):
    """``POST /admin/reload`` (admin): serve another bundle, without a restart, on every worker and replica."""

    model_config = _REQUEST_CONFIG

    bundle: str = Field(min_length=1, max_length=1024, description="a bundle folder or a BentoML model tag")
    arm: str | None = Field(
        default=None,
        max_length=32,
        description="the experiment arm to reload (omitted: no experiment, or the first arm)",
    )


class ReloadResponse(BaseModel):
    bundle: str = Field(description="the model tag now served (answers carry it as `model`)")
    previous: str = Field(description="the one it replaced")
    arm: str | None
    version: str = Field(
        description="the announcement's id: the other workers and replicas follow within reload_poll_s"
    )
