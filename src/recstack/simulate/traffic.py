"""Replayed users visiting a running service, over HTTP, with a bounded number of visits in flight.

One visit, in order (each step starts after the previous one's answer, so every event is received after the
impression it follows was served, by the service's own clock):

1. ``POST /consent`` (analytics and personalisation; a ``collect`` key) when the run asks for it;
2. ``POST /recommend {user_id, k, context}`` (a ``recommend`` key): the answer's ``request_id``, ``arm``, ``model``
   and items are kept;
3. the click model picks the clicked positions; ``POST /events`` (batch form, a ``collect`` key): one ``click`` per
   clicked item carrying the answer's ``request_id``, then one ``rating`` (no ``request_id``) per held-out item that
   was not clicked, so what the user goes on to interact with is exactly their held-out set.

Events carry no client timestamp: the collector stamps them when received, which is after the answer that came
before them, so the monitor (which never attributes an event earlier than its impression) sees them in order. A 429 or
503 is retried after its ``Retry-After``; any other refusal stops the run with the status and the answer's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import httpx
from tqdm import tqdm

from recstack.simulate.click_model import ClickModel, user_rng
from recstack.simulate.visitors import Visitor

RETRIES = 20
RETRY_STATUSES = frozenset({429, 503})

_P = ParamSpec("_P")
_T = TypeVar("_T")


class SimulationError(RuntimeError):
    """The service or the lake answered something the simulation cannot go on with; the message says what to fix."""


@dataclass(frozen=True)
class ApiKeys:
    """The keys a visit sends: ``recommend`` for /recommend, ``collect`` for /consent and /events (an admin key may
    be both). None: no Authorization header (a service with ``auth=false``)."""

    recommend: str | None = None
    collect: str | None = None


@dataclass(frozen=True)
class TrafficSettings:
    base_url: str
    k: int = 10
    hour: int | None = 12
    dow: int | None = 0
    concurrency: int = 8
    timeout_s: float = 30.0
    consent: bool = True
    max_batch: int = 500

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency={self.concurrency!r}: give between 1 and 256 visits in flight")
        if not 1 <= self.k <= 62:
            raise ValueError(f"k={self.k!r}: give a list length between 1 and 62")


@dataclass(frozen=True)
class Visit:
    """What one visit was served and did."""

    visitor: Visitor
    request_id: str
    experiment: str  # '' when the service runs none
    arm: str  # '' without an experiment
    model: str  # the bundle tag that answered
    items: tuple[str, ...]
    clicks: tuple[int, ...]  # 1-based positions clicked
    personalised: bool
    user_source: str


def visit_events(visitor: Visitor, request_id: str, items: Sequence[str], clicks: Sequence[int]) -> list[dict]:
    """The events a visit posts (pure): a ``click`` with ``request_id`` per clicked position, then a ``rating`` per
    held-out item not clicked. Event ids derive from the request id, so a retried batch is deduplicated."""
    events: list[dict] = []
    clicked = set()
    for position in clicks:
        item = items[position - 1]
        clicked.add(item)
        events.append(
            {
                "event_id": f"sim-{request_id}-c{position}",
                "user_id": visitor.user_id,
                "item_id": item,
                "event_type": "click",
                "request_id": request_id,
            }
        )
    for j, (item, value) in enumerate(zip(visitor.test_items, visitor.test_values, strict=True)):
        if item not in clicked:
            events.append(
                {
                    "event_id": f"sim-{request_id}-r{j}",
                    "user_id": visitor.user_id,
                    "item_id": item,
                    "event_type": "rating",
                    "value": value,
                }
            )
    return events


def _headers(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def _refused(what: str, answer: httpx.Response, key_env: str) -> SimulationError:
    try:
        reason = answer.json().get("error", answer.text)
    except ValueError:
        reason = answer.text
    hint = ""
    if answer.status_code in (401, 403):
        hint = f" (the service wants an API key of the right role: set {key_env})"
    return SimulationError(f"{what} answered {answer.status_code}: {str(reason)[:300]}{hint}")


async def _post(client: httpx.AsyncClient, path: str, body: dict, key: str | None) -> httpx.Response:
    """POST, retrying 429 / 503 after the answer's Retry-After (a busy collector or a rate limit: nothing dropped)."""
    for _ in range(RETRIES):
        answer = await client.post(path, json=body, headers=_headers(key))
        if answer.status_code not in RETRY_STATUSES:
            return answer
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1") or 1), 10.0))
    return answer


async def _visit(
    client: httpx.AsyncClient,
    visitor: Visitor,
    settings: TrafficSettings,
    keys: ApiKeys,
    clicks: ClickModel,
    seed: int,
    key_envs: tuple[str, str],
) -> Visit:
    recommend_env, collect_env = key_envs
    if settings.consent:
        body = {"user_id": visitor.user_id, "purposes": {"analytics": True, "personalisation": True}}
        answer = await _post(client, "/consent", body, keys.collect)
        if answer.status_code != 200:
            raise _refused("POST /consent", answer, collect_env)
    request: dict = {"user_id": visitor.user_id, "k": settings.k}
    context = {name: v for name, v in (("hour", settings.hour), ("dow", settings.dow)) if v is not None}
    if context:
        request["context"] = context
    answer = await _post(client, "/recommend", request, keys.recommend)
    if answer.status_code != 200:
        raise _refused("POST /recommend", answer, recommend_env)
    served = answer.json()
    request_id = served.get("request_id")
    if not request_id:
        raise SimulationError(
            "POST /recommend answered without a request_id: this service predates impressions (issue 15); "
            "serve with a recstack that records them"
        )
    items = tuple(str(i["item_id"]) for i in served["items"])
    clicked = clicks.clicks(items, frozenset(visitor.test_items), user_rng(seed, visitor.user_idx))
    events = visit_events(visitor, request_id, items, clicked)
    for start in range(0, len(events), settings.max_batch):
        batch = events[start : start + settings.max_batch]
        answer = await _post(client, "/events", {"events": batch}, keys.collect)
        if answer.status_code != 202:
            raise _refused("POST /events", answer, collect_env)
        result = answer.json()
        if result.get("accepted") != len(batch):
            raise SimulationError(
                f"POST /events stored {result.get('accepted')} of {len(batch)} events of user {visitor.user_id!r} "
                f"(dropped: {result.get('reason', 'unknown')}); with consent required, keep consent=true"
            )
    return Visit(
        visitor=visitor,
        request_id=str(request_id),
        experiment=str(served.get("experiment") or ""),
        arm=str(served.get("arm") or ""),
        model=str(served.get("model") or ""),
        items=items,
        clicks=clicked,
        personalised=bool(served.get("personalised", True)),
        user_source=str(served.get("user_source", "")),
    )


async def visit_all(
    visitors: Sequence[Visitor],
    settings: TrafficSettings,
    keys: ApiKeys,
    clicks: ClickModel,
    seed: int,
    *,
    progress: bool = True,
    key_envs: tuple[str, str] = ("the recommend key", "the collect key"),
) -> list[Visit]:
    """Every visitor visits once, ``settings.concurrency`` visits in flight; the visits in visitor order."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(len(visitors)):
        queue.put_nowait(n)
    done: list[Visit | None] = [None] * len(visitors)
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    # disable=None: a bar on a terminal only, not thousands of lines in a log file
    bar = tqdm(total=len(visitors), unit="user", desc="visits", disable=None if progress else True, leave=False)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            visit = await _visit(client, visitors[n], settings, keys, clicks, seed, key_envs)
            done[n] = visit
            bar.update(1)

    try:
        async with httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"), timeout=settings.timeout_s, limits=limits
        ) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(min(settings.concurrency, len(visitors)))]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
    except httpx.TransportError as error:
        raise SimulationError(
            f"cannot reach the service at {settings.base_url} ({type(error).__name__}: {error}); start it with "
            "recstack-serve, or set service_url"
        ) from None
    finally:
        bar.close()
    return [v for v in done if v is not None]


def _blocking(coroutine: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, _T]:
    """``coroutine`` callable from synchronous code, with the same arguments: each call runs in its own event loop."""

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return asyncio.run(coroutine(*args, **kwargs))

    return run


run_traffic = _blocking(visit_all)
""":func:`visit_all` from synchronous code (its own event loop)."""
