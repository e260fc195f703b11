"""A synthetic event lake for the profiles and segments benchmark: N events over U users and I items across D days,
written directly as lake Parquet (recstack.data.lake: ``<lake>/events/dt=YYYY-MM-DD/hour=HH/part-*.parquet``, the
EVENTS_SCHEMA columns) plus the item catalogue as the CSV ``read_items`` reads (``item_id,title,categories``).

    .venv/bin/python benchmarks/synthetic_lake.py OUT [--events 20000000] [--users 200000] [--items 20000] [--seed 0]

The story it tells, so that every profile column and segment rule has something to find:

* users: a heavy-tailed activity (log-normal), an active span (some join late, some lapse), a main and a side taste
  (two genres, popular genres more often), a home device and a country with its time zone; 5% are anonymous
  visitors (the ``v:`` pseudonym), a few are bots (bursts of hundreds of events; half declared as
  ``device_class = bot``, half posing as desktop browsers);
* sessions: a user's events come in sessions (geometric length, seconds apart), started at a local hour drawn from a
  diurnal profile; days follow a weekly cycle and a slow growth; one site-wide spike hour of views of one item
  (20:00 UTC on the last day, so a check of recent days sees it);
* events: mostly views, then clicks, dwell (ms, log-normal), scrolls, add-to-cart, ratings (1-5, higher for the
  user's taste), purchases (by the 30% who buy), searches, stated preferences and survey answers; items drawn by a
  Zipf law over popularity within the taste genre or the catalogue; ``profile`` events with demographics (some
  fields missing, some users update theirs, a few accounts share an e-mail identity hash);
* context: browser and OS families by device, referrer hosts, the client's local hour; ``client_ts`` a little before
  ``received_ts`` (network delay), with a few late arrivals and clocks far off (so the event-time rule matters).

User ids are the HMAC pseudonyms of ``user-<n>`` (``visitor-<n>`` for visitors) under the given key, so a service with
the same key finds ``user-<n>`` by its raw id. Everything is vectorised numpy/Arrow, one day at a time, so memory stays
bounded whatever N; the output is a function of (spec, key) only. ``lake.json`` beside ``events/`` is written last:
a lake without it is incomplete, and :func:`ensure_lake` reuses a lake only when its spec matches.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recstack.collect.pseudonymise import Pseudonymiser
from recstack.data.lake import EVENTS_SCHEMA, TS, partition_dir
from recstack.data.sources.synthetic import ADJECTIVES, CATEGORY_NAMES, NOUNS

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MANIFEST = "lake.json"
ITEMS_FILE = "items.csv"
FORMAT = 4  # bump when the generator's output changes, so old lakes are not reused

# Behavioural event mix (profile events and the spike are added on top, see LakeSpec).
EVENT_MIX: tuple[tuple[str, float], ...] = (
    ("view", 0.60), ("click", 0.15), ("dwell", 0.10), ("scroll", 0.04), ("add_to_cart", 0.04), ("rating", 0.03),
    ("purchase", 0.015), ("search", 0.015), ("preference", 0.005), ("survey", 0.005),
)  # fmt: skip
PAGE_LEVEL = frozenset({"search", "preference", "survey", "profile"})  # no item_id
DEVICES: tuple[tuple[str, float], ...] = (("desktop", 0.45), ("mobile", 0.45), ("tablet", 0.10))
BROWSERS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "desktop": (("Chrome", "Windows", 0.45), ("Firefox", "Windows", 0.1), ("Safari", "Mac OS X", 0.2),
                ("Edge", "Windows", 0.15), ("Firefox", "Linux", 0.1)),
    "mobile": (("Chrome Mobile", "Android", 0.55), ("Mobile Safari", "iOS", 0.45)),
    "tablet": (("Mobile Safari", "iOS", 0.7), ("Chrome", "Android", 0.3)),
}  # fmt: skip
BOT_BROWSERS = ("Googlebot", "bingbot", "AhrefsBot")
# country, UTC offset (hours), language, share of users
COUNTRIES: tuple[tuple[str, int, str, float], ...] = (
    ("US", -5, "en", 0.30), ("GB", 0, "en", 0.12), ("DE", 1, "de", 0.12), ("FR", 1, "fr", 0.10),
    ("ES", 1, "es", 0.06), ("IT", 1, "it", 0.05), ("NL", 1, "nl", 0.04), ("BR", -3, "pt", 0.08),
    ("IN", 5, "hi", 0.08), ("JP", 9, "ja", 0.05),
)  # fmt: skip
AGE_BANDS: tuple[tuple[str, float], ...] = (
    ("0-17", 0.04), ("18-24", 0.18), ("25-34", 0.28), ("35-44", 0.22), ("45-54", 0.14), ("55-64", 0.09), ("65+", 0.05),
)  # fmt: skip
GENDERS: tuple[tuple[str, float], ...] = (("F", 0.49), ("M", 0.49), ("X", 0.02))
REFERRERS = ("www.google.com", "www.bing.com", "t.co", "www.facebook.com", "news.example.org", "duckduckgo.com")
SOURCES: tuple[tuple[str, float], ...] = (("api", 0.85), ("pixel", 0.10), ("log", 0.05))
SURVEY_QUESTIONS = ("favourite_genre", "watch_with", "subscription_intent")
SURVEY_ANSWERS = ("yes", "no", "maybe", "alone", "family", "friends")
# Diurnal profile of session starts by local hour (relative weights).
DIURNAL = np.array([2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 7, 8, 8, 7, 7, 7, 8, 10, 12, 13, 12, 8, 4], dtype=np.float64)
WEEKLY = np.array([0.95, 0.93, 0.95, 0.98, 1.05, 1.15, 1.12])  # Monday .. Sunday


@dataclass(frozen=True)
class LakeSpec:
    """What to generate. ``end`` is the exclusive end of the last day (the benchmark's ``as_of``)."""

    events: int = 20_000_000
    users: int = 200_000
    items: int = 20_000
    days: int = 90
    genres: int = 20
    seed: int = 0
    end: str = "2026-12-01T00:00:00+00:00"
    anonymous_share: float = 0.05  # users who are anonymous visitors
    bots: int = 20
    bot_event_share: float = 0.01
    spike_event_share: float = 0.004  # extra views in the spike hour, of all events
    profile_share: float = 0.6  # users with a profile event
    duplicate_share: float = 0.005  # users who share an identity hash with another account
    session_mean: float = 8.0  # events per session
    item_zipf: float = 1.1

    def __post_init__(self) -> None:
        if self.events < 1000 or self.users < 100 or self.items < 50:
            raise ValueError("synthetic lake: give at least 1,000 events, 100 users and 50 items")
        if not 1 <= self.genres <= len(CATEGORY_NAMES):
            raise ValueError(f"synthetic lake: genres must be 1..{len(CATEGORY_NAMES)}")
        if self.days < 1:
            raise ValueError("synthetic lake: days must be >= 1")

    @property
    def end_ms(self) -> int:
        return int(datetime.fromisoformat(self.end).timestamp() * 1000)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.days * DAY_MS


@dataclass(frozen=True)
class LakeInfo:
    """A written lake: where, what spec, how many rows by type, how long it took."""

    root: Path
    items_path: Path
    spec: LakeSpec
    rows: int
    files: int
    by_type: dict[str, int]
    seconds: float

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    def as_dict(self) -> dict:
        return {
            "lake": str(self.lake),
            "items_path": str(self.items_path),
            "spec": asdict(self.spec),
            "rows": self.rows,
            "files": self.files,
            "by_type": self.by_type,
            "seconds": round(self.seconds, 2),
            "format": FORMAT,
        }


def raw_user_id(n: int) -> str:
    """The raw id behind user ``n`` (what an API caller sends); visitors are ``visitor-<n>``."""
    return f"user-{n:07d}"


# ---- the population ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    categories: list[list[int]]  # genre indices per item
    member: np.ndarray  # (items, genres) bool: item has genre
    rank_of: np.ndarray  # popularity rank per item (0 = most popular)
    pools: list[np.ndarray]  # per genre: items with that genre, most popular first
    pool_cdf: list[np.ndarray]
    all_cdf: np.ndarray  # over items by rank
    by_rank: np.ndarray  # item at each rank
    genre_weight: np.ndarray


def _choice(rng: np.random.Generator, table: tuple, n: int) -> np.ndarray:
    weights = np.array([row[-1] for row in table], dtype=np.float64)
    return rng.choice(len(table), size=n, p=weights / weights.sum())


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _catalogue(spec: LakeSpec, rng: np.random.Generator) -> _Catalogue:
    g = spec.genres
    genre_weight = 1.0 / np.arange(1, g + 1) ** 0.8  # Drama and Comedy common, Western rare
    genre_weight /= genre_weight.sum()
    primary = rng.choice(g, size=spec.items, p=genre_weight)
    n_cats = rng.choice([1, 2, 3], size=spec.items, p=[0.5, 0.35, 0.15])
    categories = []
    for first, k in zip(primary, n_cats, strict=True):
        cats = [int(first)]
        if k > 1:
            extra = rng.choice(g, size=min(k - 1 + 2, g), replace=False, p=genre_weight)
            cats += [int(c) for c in extra if c != first][: k - 1]
        categories.append(cats)
    member = np.zeros((spec.items, g), dtype=bool)
    for i, cats in enumerate(categories):
        member[i, cats] = True
    by_rank = rng.permutation(spec.items)
    rank_of = np.empty(spec.items, dtype=np.int64)
    rank_of[by_rank] = np.arange(spec.items)
    pools, pool_cdf = [], []
    for genre in range(g):
        members = np.flatnonzero(member[:, genre])
        if members.size == 0:
            members = by_rank[:1]
        members = members[np.argsort(rank_of[members], kind="stable")]
        pools.append(members)
        pool_cdf.append(_zipf_cdf(len(members), spec.item_zipf))
    return _Catalogue(
        categories, member, rank_of, pools, pool_cdf, _zipf_cdf(spec.items, spec.item_zipf), by_rank, genre_weight
    )


@dataclass(frozen=True)
class _Users:
    ids: pa.Array  # pseudonyms
    anonymous: np.ndarray
    weight: np.ndarray  # activity
    start_day: np.ndarray
    end_day: np.ndarray
    main: np.ndarray
    side: np.ndarray
    device: np.ndarray  # index into DEVICES
    country: np.ndarray  # index into COUNTRIES
    buyer: np.ndarray
    bots: np.ndarray  # user indices of the bots


def _users(spec: LakeSpec, rng: np.random.Generator, pseudo: Pseudonymiser, cat: _Catalogue) -> _Users:
    u = spec.users
    anonymous = rng.random(u) < spec.anonymous_share
    ids = pa.array(
        [
            pseudo.visitor(f"visitor-{n:07d}") if anon else pseudo.user(raw_user_id(n))
            for n, anon in enumerate(anonymous)
        ],
        pa.string(),
    )
    weight = rng.lognormal(0.0, 1.4, size=u)
    weight[anonymous] *= 0.3  # visitors come back less
    start = np.clip(rng.integers(-60, spec.days, size=u), 0, spec.days - 1)
    length = rng.exponential(spec.days * 0.6, size=u).astype(np.int64)
    end = np.minimum(start + length, spec.days - 1)
    main = rng.choice(spec.genres, size=u, p=cat.genre_weight)
    side = (main + 1 + rng.integers(0, max(spec.genres - 1, 1), size=u)) % spec.genres
    bots = rng.choice(np.flatnonzero(~anonymous), size=min(spec.bots, int((~anonymous).sum())), replace=False)
    start[bots], end[bots] = 0, spec.days - 1
    return _Users(
        ids=ids,
        anonymous=anonymous,
        weight=weight,
        start_day=start,
        end_day=end,
        main=main,
        side=side,
        device=_choice(rng, DEVICES, u),
        country=_choice(rng, COUNTRIES, u),
        buyer=rng.random(u) < 0.3,
        bots=np.sort(bots),
    )


# ---- one day --------------------------------------------------------------------------------------------------------


def _day_counts(spec: LakeSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    start = datetime.fromtimestamp(spec.start_ms / 1000, UTC)
    weekday = np.array([(start + timedelta(days=d)).weekday() for d in range(spec.days)])
    growth = np.linspace(0.9, 1.1, spec.days)
    p = WEEKLY[weekday] * growth
    return rng.multinomial(n, p / p.sum())


def _sessions_for(rng: np.random.Generator, n_events: int, mean: float) -> np.ndarray:
    """Session lengths (>= 1) summing to exactly ``n_events``."""
    if n_events <= 0:
        return np.zeros(0, dtype=np.int64)
    guess = int(n_events / mean * 1.2) + 16
    lengths = rng.geometric(1.0 / mean, size=guess)
    total = np.cumsum(lengths)
    while total[-1] < n_events:
        more = rng.geometric(1.0 / mean, size=guess)
        lengths = np.concatenate([lengths, more])
        total = np.cumsum(lengths)
    k = int(np.searchsorted(total, n_events)) + 1
    lengths = lengths[:k].copy()
    lengths[-1] -= int(total[k - 1] - n_events)
    return lengths


def _pick_users(rng: np.random.Generator, users: _Users, day: int, n: int) -> np.ndarray:
    active = (users.start_day <= day) & (users.end_day >= day)
    active[users.bots] = False
    weights = np.where(active, users.weight, 0.0)
    cdf = np.cumsum(weights)
    if cdf[-1] <= 0:
        return rng.integers(0, len(weights), size=n)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(weights) - 1)


def _pick_items(rng: np.random.Generator, cat: _Catalogue, users: _Users, who: np.ndarray) -> np.ndarray:
    """Per event: from the user's main taste (60%), side taste (20%) or the whole catalogue (20%), Zipf by rank."""
    n = len(who)
    draw = rng.random(n)
    pool = np.where(draw < 0.6, users.main[who], np.where(draw < 0.8, users.side[who], -1))
    out = np.empty(n, dtype=np.int64)
    r = rng.random(n)
    anywhere = pool < 0
    out[anywhere] = cat.by_rank[np.minimum(np.searchsorted(cat.all_cdf, r[anywhere]), len(cat.by_rank) - 1)]
    order = np.argsort(pool, kind="stable")
    sorted_pool = pool[order]
    bounds = np.searchsorted(sorted_pool, np.arange(len(cat.pools) + 1))
    for genre in range(len(cat.pools)):
        rows = order[bounds[genre] : bounds[genre + 1]]
        if rows.size:
            members = cat.pools[genre]
            out[rows] = members[np.minimum(np.searchsorted(cat.pool_cdf[genre], r[rows]), len(members) - 1)]
    return out


@dataclass
class _Block:
    """Columns of one day's events as numpy arrays (strings as small-int codes or Arrow arrays)."""

    user: np.ndarray
    item: np.ndarray  # -1: page-level
    etype: np.ndarray  # index into TYPES
    value: np.ndarray  # NaN: none
    client_ms: np.ndarray
    received_ms: np.ndarray
    device: np.ndarray  # index into DEVICE_NAMES
    browser: np.ndarray  # index into BROWSER_NAMES / OS_NAMES pairs
    source: np.ndarray
    referrer: np.ndarray  # -1: none
    local_hour: np.ndarray
    category: np.ndarray  # -1: none (preference events)
    question: np.ndarray  # -1: none
    answer: np.ndarray
    query: np.ndarray  # -1: none, else a word pair index
    age: np.ndarray  # -1: none (profile events)
    gender: np.ndarray
    country: np.ndarray
    language: np.ndarray
    identity: np.ndarray  # -1: none, else the person index behind an identity hash


TYPES: tuple[str, ...] = (*(t for t, _ in EVENT_MIX), "profile")
DEVICE_NAMES: tuple[str, ...] = (*(d for d, _ in DEVICES), "bot")
BROWSER_PAIRS: tuple[tuple[str, str], ...] = tuple(
    {(b, o): None for rows in BROWSERS.values() for b, o, _ in rows}
) + tuple((b, "Other") for b in BOT_BROWSERS)
_TYPE = {t: i for i, t in enumerate(TYPES)}


def _browser_codes(rng: np.random.Generator, device: np.ndarray) -> np.ndarray:
    out = np.empty(len(device), dtype=np.int64)
    for d, (name, _) in enumerate(DEVICES):
        rows = np.flatnonzero(device == d)
        table = BROWSERS[name]
        codes = np.array([BROWSER_PAIRS.index((b, o)) for b, o, _ in table])
        out[rows] = codes[_choice(rng, table, len(rows))]
    bots = np.flatnonzero(device == len(DEVICES))
    out[bots] = len(BROWSER_PAIRS) - len(BOT_BROWSERS) + rng.integers(0, len(BOT_BROWSERS), size=len(bots))
    return out


def _behaviour(
    spec: LakeSpec, rng: np.random.Generator, cat: _Catalogue, users: _Users, day: int, n: int, day_ms: int
) -> _Block:
    """``n`` behavioural events of regular users on ``day``, in sessions."""
    lengths = _sessions_for(rng, n, spec.session_mean)
    s = len(lengths)
    who_s = _pick_users(rng, users, day, s)
    offset_h = np.array([c[1] for c in COUNTRIES])[users.country[who_s]]
    local = rng.choice(24, size=s, p=DIURNAL / DIURNAL.sum())
    start = day_ms + ((local - offset_h) % 24) * HOUR_MS + rng.integers(0, HOUR_MS, size=s)
    device_s = np.where(rng.random(s) < 0.8, users.device[who_s], _choice(rng, DEVICES, s))
    referrer_s = np.where(rng.random(s) < 0.3, rng.integers(0, len(REFERRERS), size=s), -1)
    source_s = _choice(rng, SOURCES, s)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(n) - first
    gaps = rng.exponential(45_000, size=n).astype(np.int64)
    gaps[position == 0] = 0
    # cumulative gaps within each session
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[np.cumsum(lengths) - lengths], lengths)
    client = np.repeat(start, lengths) + cum
    who = np.repeat(who_s, lengths)
    device = np.repeat(device_s, lengths)
    etype = _choice(rng, EVENT_MIX, n)
    etype[position == 0] = _TYPE["view"]  # a session opens with a view
    etype[(etype == _TYPE["purchase"]) & ~users.buyer[who]] = _TYPE["view"]
    item = _pick_items(rng, cat, users, who)
    page = np.isin(etype, [_TYPE[t] for t in PAGE_LEVEL]) | ((etype == _TYPE["scroll"]) & (rng.random(n) < 0.5))
    item[page] = -1
    value = np.full(n, np.nan)
    dwell = etype == _TYPE["dwell"]
    value[dwell] = np.minimum(rng.lognormal(np.log(30_000), 1.0, size=int(dwell.sum())), 86_400_000).round()
    scroll = etype == _TYPE["scroll"]
    value[scroll] = rng.random(int(scroll.sum())).round(3)
    rating = etype == _TYPE["rating"]
    likes = cat.member[item[rating], users.main[who[rating]]]
    value[rating] = np.clip(np.round(rng.normal(3.2 + 0.9 * likes, 1.0)), 1, 5)
    cart = etype == _TYPE["add_to_cart"]
    value[cart] = rng.integers(1, 4, size=int(cart.sum()))
    buy = etype == _TYPE["purchase"]
    value[buy] = np.round(rng.lognormal(np.log(12), 0.6, size=int(buy.sum())), 2)
    pref = etype == _TYPE["preference"]
    liked = rng.random(int(pref.sum())) < 0.75
    category = np.full(n, -1)
    category[pref] = np.where(liked, users.main[who[pref]], rng.integers(0, spec.genres, size=int(pref.sum())))
    value[pref] = np.where(liked, rng.uniform(0.3, 1.0, size=liked.size), rng.uniform(-1.0, 0.0, size=liked.size))
    value[pref] = np.round(value[pref], 3)
    survey = etype == _TYPE["survey"]
    question = np.full(n, -1)
    answer = np.full(n, -1)
    question[survey] = rng.integers(0, len(SURVEY_QUESTIONS), size=int(survey.sum()))
    answer[survey] = rng.integers(0, len(SURVEY_ANSWERS), size=int(survey.sum()))
    query = np.where(etype == _TYPE["search"], rng.integers(0, len(ADJECTIVES) * len(NOUNS), size=n), -1)
    return _finish(
        rng, users, who, item, etype, value, client, device, np.repeat(source_s, lengths),
        np.where(position == 0, np.repeat(referrer_s, lengths), -1), category, question, answer, query,
    )  # fmt: skip


def _finish(
    rng: np.random.Generator,
    users: _Users,
    who: np.ndarray,
    item: np.ndarray,
    etype: np.ndarray,
    value: np.ndarray,
    client: np.ndarray,
    device: np.ndarray,
    source: np.ndarray,
    referrer: np.ndarray,
    category: np.ndarray,
    question: np.ndarray,
    answer: np.ndarray,
    query: np.ndarray,
) -> _Block:
    """Receive times, local hours, browsers and empty demographic columns for behavioural events."""
    n = len(who)
    delay = rng.exponential(250, size=n).astype(np.int64)
    late = rng.random(n) < 0.01  # sent from an offline queue: minutes to hours later
    delay[late] += rng.integers(60_000, 6 * HOUR_MS, size=int(late.sum()))
    received = client + delay
    skewed = rng.random(n) < 0.003  # a client clock far off: the receive time is the event time
    client = client.copy()
    client[skewed] += (
        rng.choice([-1, 1], size=int(skewed.sum())) * rng.integers(2, 400, size=int(skewed.sum())) * DAY_MS
    )
    offset_h = np.array([c[1] for c in COUNTRIES])[users.country[who]]
    local_hour = ((client // HOUR_MS + offset_h) % 24).astype(np.int8)
    none = np.full(n, -1)
    return _Block(
        user=who,
        item=item,
        etype=etype,
        value=value,
        client_ms=client,
        received_ms=received,
        device=device,
        browser=_browser_codes(rng, device),
        source=source,
        referrer=referrer,
        local_hour=local_hour,
        category=category,
        question=question,
        answer=answer,
        query=query,
        age=none,
        gender=none,
        country=none,
        language=none,
        identity=none,
    )


def _bots(spec: LakeSpec, rng: np.random.Generator, users: _Users, n: int, day_ms: int) -> _Block:
    """Crawlers: bursts of views half a second apart (120 a minute, past the bot-rate check's 60), around the clock.
    Half declare themselves (``device_class = bot``); the other half pose as desktop browsers, for the check to find."""
    lengths = _sessions_for(rng, n, 300.0)
    s = len(lengths)
    who_s = rng.choice(users.bots, size=s)
    start = day_ms + rng.integers(0, DAY_MS - 200_000, size=s)
    cum = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    client = np.repeat(start, lengths) + cum * 500
    who = np.repeat(who_s, lengths)
    item = rng.integers(0, spec.items, size=n)
    none = np.full(n, -1)
    device = np.where(np.isin(who, users.bots[1::2]), 0, len(DEVICES))
    block = _finish(
        rng, users, who, item, np.full(n, _TYPE["view"]), np.full(n, np.nan), client,
        device, np.zeros(n, dtype=np.int64), none, none, none, none, none,
    )  # fmt: skip
    block.local_hour[:] = (client // HOUR_MS % 24).astype(np.int8)
    return block


def _spike(
    spec: LakeSpec, rng: np.random.Generator, cat: _Catalogue, users: _Users, day: int, n: int, hour_ms: int
) -> _Block:
    """A site-wide spike: ``n`` views in one hour, mostly of one featured item (a TV mention)."""
    who = _pick_users(rng, users, day, n)
    item = np.where(rng.random(n) < 0.7, cat.by_rank[min(50, spec.items - 1)], _pick_items(rng, cat, users, who))
    client = hour_ms + np.sort(rng.integers(0, HOUR_MS, size=n))
    device = np.where(rng.random(n) < 0.7, 1, users.device[who])  # phones in front of the TV
    none = np.full(n, -1)
    return _finish(
        rng, users, who, item, np.full(n, _TYPE["view"]), np.full(n, np.nan), client, device,
        np.zeros(n, dtype=np.int64), none, none, none, none, none,
    )  # fmt: skip


def _profiles(
    rng: np.random.Generator, users: _Users, who: np.ndarray, client: np.ndarray, person: np.ndarray
) -> _Block:
    """Profile events of ``who`` at ``client`` times: demographics leaning with taste, some fields missing."""
    n = len(who)
    age = _choice(rng, AGE_BANDS, n)
    # taste says something about age (what an imputer trained on preferences can learn): each genre pulls its fans
    # up to two bands younger or older
    pull = (users.main[who] % 5) - 2
    leaning = rng.random(n) < 0.6
    age = np.where(leaning, np.clip(age + pull, 0, len(AGE_BANDS) - 1), age)
    gender = _choice(rng, GENDERS, n)
    country = users.country[who]
    language = country.copy()
    age[rng.random(n) < 0.2] = -1
    gender[rng.random(n) < 0.15] = -1
    country = np.where(rng.random(n) < 0.1, -1, country)
    language = np.where(rng.random(n) < 0.3, -1, language)
    identity = np.where(rng.random(n) < 0.8, person[who], -1)  # most profiles carry an e-mail
    none = np.full(n, -1)
    block = _finish(
        rng, users, who, none.copy(), np.full(n, _TYPE["profile"]), np.full(n, np.nan), client,
        users.device[who], np.zeros(n, dtype=np.int64), none, none, none, none, none,
    )  # fmt: skip
    block.age, block.gender, block.country, block.language, block.identity = age, gender, country, language, identity
    return block


# ---- to Arrow -------------------------------------------------------------------------------------------------------


def _codes(values: tuple[str, ...] | list[str], codes: np.ndarray) -> pa.Array:
    """Strings by code (-1: null), built by Arrow's take, not one Python string per row."""
    dictionary = pa.array(list(values), pa.string())
    return dictionary.take(pa.array(codes, pa.int64(), mask=codes < 0))


@dataclass(frozen=True)
class _Strings:
    items: pa.Array
    genres: list[str]
    queries: list[str]
    identities: pa.Array


def _table(block: _Block, users: _Users, strings: _Strings, event_base: int, seed: int) -> pa.Table:
    n = len(block.user)
    sequence = pa.array(np.arange(event_base, event_base + n, dtype=np.int64)).cast(pa.string())
    event_id = pc.binary_join_element_wise(pa.scalar(f"syn{seed}"), sequence, "-")
    pairs = BROWSER_PAIRS
    columns = {
        "event_id": event_id,
        "user_id": users.ids.take(pa.array(block.user)),
        "anonymous": pa.array(users.anonymous[block.user]),
        "item_id": strings.items.take(pa.array(block.item, pa.int64(), mask=block.item < 0)),
        "event_type": _codes(TYPES, block.etype),
        "value": pa.array(block.value, pa.float64(), from_pandas=True),
        "client_ts": pa.array(block.client_ms, pa.int64()).cast(TS),
        "received_ts": pa.array(block.received_ms, pa.int64()).cast(TS),
        "source": _codes([s for s, _ in SOURCES], block.source),
        "category": _codes(strings.genres, block.category),
        "question_id": _codes(SURVEY_QUESTIONS, block.question),
        "answer": _codes(SURVEY_ANSWERS, block.answer),
        "query": _codes(strings.queries, block.query),
        "age_band": _codes([a for a, _ in AGE_BANDS], block.age),
        "gender": _codes([g for g, _ in GENDERS], block.gender),
        "country": _codes([c[0] for c in COUNTRIES], block.country),
        "language": _codes([c[2] for c in COUNTRIES], block.language),
        "identity_hash": strings.identities.take(pa.array(block.identity, pa.int64(), mask=block.identity < 0)),
        "device_class": _codes(DEVICE_NAMES, block.device),
        "browser_family": _codes([b for b, _ in pairs], block.browser),
        "os_family": _codes([o for _, o in pairs], block.browser),
        "referrer_host": _codes(REFERRERS, block.referrer),
        "local_hour": pa.array(block.local_hour, pa.int8()),
    }
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in EVENTS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)


def _concat(blocks: list[_Block]) -> _Block:
    return _Block(**{name: np.concatenate([getattr(b, name) for b in blocks]) for name in _Block.__dataclass_fields__})


def _write_file(table: pa.Table, final: Path) -> None:
    temp = final.parent / f".{final.name}.tmp"
    pq.write_table(table, temp, compression="zstd")
    os.replace(temp, final)


def _write_hours(table: pa.Table, lake: Path, name: str, pool: ThreadPoolExecutor) -> list[Future]:
    """One file per receive hour (``part-<name>.parquet``), each to a temporary name then renamed, written by
    ``pool`` (Parquet encoding releases the GIL, so the next day is generated meanwhile). Returns the writes."""
    received = table["received_ts"].cast(pa.int64()).to_numpy()
    order = np.argsort(received, kind="stable")
    table = table.take(pa.array(order))
    hours = received[order] // HOUR_MS
    cuts = np.flatnonzero(np.diff(hours)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(hours)]])
    writes = []
    for lo, hi in zip(starts, ends, strict=True):
        when = datetime.fromtimestamp(int(hours[lo]) * HOUR_MS / 1000, UTC)
        directory = partition_dir(lake, "events", when)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"part-{name}.parquet"
        writes.append(pool.submit(_write_file, table.slice(int(lo), int(hi - lo)), final))
    return writes


# ---- the whole lake -------------------------------------------------------------------------------------------------


def write_items(path: Path, spec: LakeSpec, cat: _Catalogue) -> None:
    genres = CATEGORY_NAMES[: spec.genres]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "title", "categories"])
        for i in range(spec.items):
            title = f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]} {i}"
            writer.writerow([f"i{i}", title, "|".join(genres[c] for c in cat.categories[i])])


def generate(
    root: str | Path, spec: LakeSpec, key: bytes, progress: bool = False, writers: int | None = None
) -> LakeInfo:
    """Write ``<root>/lake`` (events) and ``<root>/items.csv`` for ``spec``, replacing what is there. ``writers``:
    threads encoding Parquet (default: the cores, at most 8); at most two days are held in memory."""
    started = time.perf_counter()
    root = Path(root)
    lake = root / "lake"
    (root / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(lake, ignore_errors=True)
    lake.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    pseudo = Pseudonymiser(key)
    cat = _catalogue(spec, rng)
    users = _users(spec, rng, pseudo, cat)
    write_items(root / ITEMS_FILE, spec, cat)
    # people behind accounts: a few accounts share a person (the same e-mail), found by the duplicate check
    person = np.arange(spec.users)
    twins = np.flatnonzero(rng.random(spec.users) < spec.duplicate_share)
    twins = twins[twins > 0]
    person[twins] = person[twins - 1]
    has_profile = (rng.random(spec.users) < spec.profile_share) & ~users.anonymous
    has_profile[users.bots] = False
    updates = has_profile & (rng.random(spec.users) < 0.1)
    profile_users = np.concatenate([np.flatnonzero(has_profile), np.flatnonzero(updates)])
    span = users.end_day[profile_users] - users.start_day[profile_users] + 1
    profile_day = users.start_day[profile_users] + (rng.random(len(profile_users)) * span).astype(np.int64)
    profile_ms = spec.start_ms + profile_day * DAY_MS + rng.integers(0, DAY_MS, size=len(profile_users))
    strings = _Strings(
        items=pa.array([f"i{i}" for i in range(spec.items)], pa.string()),
        genres=list(CATEGORY_NAMES[: spec.genres]),
        queries=[f"{a} {b}".lower() for a in ADJECTIVES for b in NOUNS],
        identities=pa.array([pseudo.identity(f"person{p}@example.com") for p in range(spec.users)], pa.string()),
    )
    n_profiles = len(profile_users)
    n_spike = int(spec.events * spec.spike_event_share)
    n_bots = int(spec.events * spec.bot_event_share) if len(users.bots) else 0
    n_behaviour = spec.events - n_profiles - n_spike - n_bots
    if n_behaviour < spec.events // 2:
        raise ValueError(f"synthetic lake: {spec.events} events are too few for {n_profiles} profile events")
    per_day = _day_counts(spec, rng, n_behaviour)
    bots_per_day = rng.multinomial(n_bots, np.full(spec.days, 1 / spec.days))
    spike_day = spec.days - 1  # yesterday evening: within the quality check's recent days, as a live alert would be
    rows, files, base = 0, 0, 0
    by_type = np.zeros(len(TYPES), dtype=np.int64)
    pool = ThreadPoolExecutor(max_workers=writers or min(8, os.cpu_count() or 1))
    in_flight: list[Future] = []
    try:
        for day in range(spec.days):
            day_ms = spec.start_ms + day * DAY_MS
            day_rng = np.random.default_rng([spec.seed, day])  # a stream per day: the lake is the same however written
            blocks = [_behaviour(spec, day_rng, cat, users, day, int(per_day[day]), day_ms)]
            if bots_per_day[day]:
                blocks.append(_bots(spec, day_rng, users, int(bots_per_day[day]), day_ms))
            if day == spike_day and n_spike:
                blocks.append(_spike(spec, day_rng, cat, users, day, n_spike, day_ms + 20 * HOUR_MS))
            todays = profile_day == day
            if todays.any():
                blocks.append(_profiles(day_rng, users, profile_users[todays], profile_ms[todays], person))
            block = _concat(blocks)
            table = _table(block, users, strings, base, spec.seed)
            for done in wait(in_flight).done:  # the previous day's files: at most two days in memory
                done.result()
            in_flight = _write_hours(table, lake, f"syn-d{day:03d}", pool)
            files += len(in_flight)
            base += table.num_rows
            rows += table.num_rows
            by_type += np.bincount(block.etype, minlength=len(TYPES))
            if progress and (day % 10 == 9 or day == spec.days - 1):
                print(
                    f"  day {day + 1}/{spec.days}: {rows:,} events, {time.perf_counter() - started:.1f} s", flush=True
                )
        for done in wait(in_flight).done:
            done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    info = LakeInfo(
        root=root,
        items_path=root / ITEMS_FILE,
        spec=spec,
        rows=rows,
        files=files,
        by_type={t: int(c) for t, c in zip(TYPES, by_type, strict=True)},
        seconds=time.perf_counter() - started,
    )
    (root / MANIFEST).write_text(json.dumps({**info.as_dict(), "key": _fingerprint(key)}, indent=1) + "\n")
    return info


def _fingerprint(key: bytes) -> str:
    """Which key the pseudonyms were made with, without recording the key."""
    return Pseudonymiser(key).user("synthetic-lake-key-fingerprint")


def ensure_lake(root: str | Path, spec: LakeSpec, key: bytes, progress: bool = False) -> tuple[LakeInfo, bool]:
    """The lake of ``spec`` under ``root``: reused when ``lake.json`` says it was written for the same spec and
    generator format (and the same key: its fingerprint is recorded), else generated. Returns (info, reused)."""
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        same = recorded.get("spec") == asdict(spec) and recorded.get("format") == FORMAT
        if same and recorded.get("key") == _fingerprint(key) and (root / "lake").is_dir():
            info = LakeInfo(
                root=root,
                items_path=root / ITEMS_FILE,
                spec=spec,
                rows=int(recorded["rows"]),
                files=int(recorded["files"]),
                by_type=dict(recorded["by_type"]),
                seconds=float(recorded["seconds"]),
            )
            return info, True
    return generate(root, spec, key, progress=progress), False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--events", type=int, default=LakeSpec.events)
    parser.add_argument("--users", type=int, default=LakeSpec.users)
    parser.add_argument("--items", type=int, default=LakeSpec.items)
    parser.add_argument("--days", type=int, default=LakeSpec.days)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    key_hex = os.environ.get("RECSTACK_HMAC_KEY")
    if not key_hex:
        sys.exit("set RECSTACK_HMAC_KEY: user ids are pseudonyms under the deployment's key (benchmarks/profiles.py "
                 "makes one in its workdir)")  # fmt: skip
    spec = LakeSpec(events=args.events, users=args.users, items=args.items, days=args.days, seed=args.seed)
    info = generate(args.out, spec, key_hex.encode(), progress=True)
    print(json.dumps(info.as_dict()))


if __name__ == "__main__":
    main()
