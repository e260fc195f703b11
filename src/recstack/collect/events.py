"""What ``POST /events`` accepts: one event or ``{"events": [...]}`` (at most ``max_batch``), validated strictly.

The four kinds the product promises share one event shape (Segment's ``track`` / ``identify`` / ``page`` idea):

* behavioural: ``view``, ``click``, ``add_to_cart``, ``purchase``, ``dwell`` (value: ms), ``scroll`` (value: depth
  0-1), ``search`` (query);
* explicit: ``rating`` (value 0-10), ``preference`` (category + value -1..1: dislike..like), ``survey`` (question_id +
  answer);
* demographic: ``profile`` (age_band / gender / country / language, standardised at the door; an optional ``email``
  is turned into a keyed identity hash at the door, so duplicate accounts can be merged, and never stored as is);
* contextual: not sent as fields but derived from the request (User-Agent classes, referrer host, the client's local
  hour from ``tz_offset_min``, GeoIP country/region).

A batch is all or nothing: one bad event rejects the whole request with a 400 naming ``events[i].field``, so a client
retries one request instead of working out which events were kept. Nothing accepted is ever lost.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ITEM_EVENTS = frozenset({"click", "add_to_cart", "purchase", "rating"})  # these need an item_id
PAGE_EVENTS = frozenset({"search", "preference", "survey", "profile"})  # these have none; view/dwell/scroll: either
EVENT_TYPES: tuple[str, ...] = ("view", "dwell", "scroll", *sorted(ITEM_EVENTS), *sorted(PAGE_EVENTS))
EventType = Literal[
    "view", "click", "add_to_cart", "purchase", "dwell", "scroll", "rating", "search", "preference", "survey", "profile"
]
# value range per event type; None: value not used (must be absent)
VALUE_RANGES: dict[str, tuple[float, float] | None] = {
    "view": (0.0, 1e6),
    "click": (0.0, 1e6),
    "add_to_cart": (0.0, 1e6),  # quantity or price, as the site likes
    "purchase": (0.0, 1e9),
    "dwell": (0.0, 86_400_000.0),  # ms, at most a day
    "scroll": (0.0, 1.0),
    "rating": (0.0, 10.0),
    "preference": (-1.0, 1.0),
    "search": None,
    "survey": None,
    "profile": None,
}
REQUIRED_VALUE = frozenset({"dwell", "scroll", "rating", "preference"})
MAX_ID = 128
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: no control characters (log injection, terminal escapes)
_EVENT_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
MAX_EMAIL = 254  # RFC 5321's limit on a forward path
_EMAIL_PATTERN = r"^\s*[^\s@\x00-\x1f\x7f]+@[^\s@\x00-\x1f\x7f]+\s*$"  # one @, no spaces or control characters

_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


def _id(max_length: int = MAX_ID):  # type: ignore[no-untyped-def]
    return Field(default=None, min_length=1, max_length=max_length, pattern=_ID_PATTERN)


class EventIn(BaseModel):
    """One event as a client sends it (ids raw; pseudonymised before anything is stored)."""

    model_config = _CONFIG

    event_id: str | None = Field(default=None, pattern=_EVENT_ID_PATTERN, description="idempotency key")
    user_id: str | None = _id()
    anonymous_id: str | None = _id()
    item_id: str | None = _id()
    event_type: EventType
    value: float | int | None = None
    timestamp: float | int | None = Field(default=None, description="client time, epoch seconds")
    tz_offset_min: int | None = Field(default=None, ge=-840, le=840, description="minutes east of UTC")
    referrer: str | None = Field(default=None, max_length=2048)
    category: str | None = _id()
    question_id: str | None = _id()
    answer: str | None = Field(default=None, max_length=4096, description="cut to max_text_chars when stored")
    query: str | None = Field(default=None, max_length=4096, description="cut to max_text_chars when stored")
    age_band: str | int | None = None
    gender: str | None = _id(32)
    country: str | None = _id(64)
    language: str | None = _id(32)
    request_id: str | None = Field(
        default=None,
        pattern=_EVENT_ID_PATTERN,
        description="the request_id of the /recommend answer a click or purchase came from (attribution)",
    )
    email: str | None = Field(
        default=None,
        max_length=MAX_EMAIL,
        pattern=_EMAIL_PATTERN,
        description="profile events only: hashed with the deployment's key at the door, never stored",
    )

    @field_validator("value", "timestamp")
    @classmethod
    def _finite(cls, value: float | int | None) -> float | int | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class EventBatch(BaseModel):
    model_config = _CONFIG

    events: list[EventIn] = Field(min_length=1)


class BadEvent(ValueError):
    """A 4xx naming the field, as ``events[3].value`` for batches."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def _loc(loc: tuple, batch: bool) -> str:
    parts = [str(p) for p in loc if not str(p).startswith(("function-", "json-or-python", "float", "int"))]
    if batch and len(parts) >= 2 and parts[0] == "events":
        text = f"events[{parts[1]}]" + "".join(f".{p}" for p in parts[2:])
    else:
        text = ".".join(parts)
    return re.sub(r"\.(str|int|float|bool)$", "", text) or "body"


def parse_events(body: object, max_batch: int) -> tuple[list[EventIn], bool]:
    """Validate a decoded JSON body: ``(events, is_batch)``; BadEvent names the first bad field."""
    batch = isinstance(body, dict) and "events" in body
    if batch:
        raw = body["events"]  # type: ignore[index]
        if isinstance(raw, list) and len(raw) > max_batch:
            raise BadEvent("events", f"a batch holds at most {max_batch} events; got {len(raw)}", status=413)
    elif not isinstance(body, dict):
        raise BadEvent("body", 'expected a JSON object: one event, or {"events": [...]}')
    try:
        events = EventBatch.model_validate(body).events if batch else [EventIn.model_validate(body)]
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = _loc(tuple(first["loc"]), batch)
        raise BadEvent(where, f"{where}: {first['msg']}") from None
    for index, event in enumerate(events):
        check_event(event, f"events[{index}]." if batch else "")
    return events, batch


def check_event(event: EventIn, where: str = "") -> None:
    """The rules one event type imposes on the others' optional fields."""
    kind = event.event_type
    if kind in ITEM_EVENTS and not event.item_id:
        raise BadEvent(f"{where}item_id", f"{where}item_id is required for {kind} events")
    bounds = VALUE_RANGES[kind]
    if event.value is not None:
        if bounds is None:
            raise BadEvent(f"{where}value", f"{where}value is not used by {kind} events; leave it out")
        low, high = bounds
        if not low <= event.value <= high:
            raise BadEvent(f"{where}value", f"{where}value {event.value} is outside [{low:g}, {high:g}] for {kind}")
    elif kind in REQUIRED_VALUE:
        raise BadEvent(f"{where}value", f"{where}value is required for {kind} events")
    if kind == "search" and not event.query:
        raise BadEvent(f"{where}query", f"{where}query is required for search events")
    if kind == "preference" and not event.category:
        raise BadEvent(f"{where}category", f"{where}category is required for preference events")
    if kind == "survey" and not (event.question_id and event.answer is not None):
        field = "question_id" if not event.question_id else "answer"
        raise BadEvent(f"{where}{field}", f"{where}{field} is required for survey events")
    if event.email is not None and kind != "profile":
        raise BadEvent(f"{where}email", f"{where}email is only accepted in profile events; send it in one")
    if kind == "profile" and all(
        getattr(event, c) is None for c in ("age_band", "gender", "country", "language", "email")
    ):
        raise BadEvent(f"{where}age_band", f"{where}a profile event needs age_band, gender, country, language or email")


def check_timestamp(event: EventIn, where: str, now_s: float, max_future_s: int, min_s: int) -> None:
    if event.timestamp is None:
        return
    if event.timestamp > now_s + max_future_s:
        raise BadEvent(f"{where}timestamp", f"{where}timestamp is more than {max_future_s} s in the future")
    if event.timestamp < min_s:
        raise BadEvent(f"{where}timestamp", f"{where}timestamp is before {min_s} (epoch seconds; not milliseconds?)")
