"""Minimisation at the door: validated events plus what the request says about the client become lake rows.

Pure: no Redis, no clock (``received_ms`` comes in). Everything personal is reduced here, before the row is encoded
into the stream, so neither Redis nor the lake ever sees a raw id, a full IP or a raw User-Agent:

* ids -> keyed HMAC pseudonyms (recstack.collect.pseudonymise);
* IP -> GeoIP country/region (optional), then truncated or dropped (``ip_mode``);
* User-Agent -> device class, browser family, OS family; referrer -> host;
* free text (search query, survey answer) -> cut to ``max_text_chars``; demographics -> the controlled vocabulary;
* a profile event's e-mail address -> normalised (:func:`normalise_email`), then a keyed identity hash
  (``identity_hash``): equal addresses give equal hashes, so recstack.profiles can merge duplicate accounts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from recstack.collect.events import BadEvent, EventIn, check_timestamp
from recstack.collect.geo import GeoLookup
from recstack.collect.network import local_hour, minimise_ip, referrer_host
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.settings import CollectSettings
from recstack.collect.user_agent import UserAgentClass, classify
from recstack.collect.vocabulary import Vocabulary


def normalise_email(email: str) -> str:
    """The form an address is hashed in: surrounding space stripped, lower case (``Ann@X.org `` = ``ann@x.org``)."""
    return email.strip().lower()


@dataclass(frozen=True)
class ClientContext:
    """What the HTTP request tells about the client (raw: used here, never stored as is)."""

    user_agent: str | None = None
    ip: str | None = None
    visitor_id: str | None = None  # the first-party cookie's random id
    referrer: str | None = None  # the Referer header (an event's own `referrer` field wins)
    source: str = "api"


class Intake:
    """Turns events into rows for one deployment's settings (key, vocabulary, GeoIP file)."""

    def __init__(
        self,
        settings: CollectSettings,
        pseudonymiser: Pseudonymiser,
        vocabulary: Vocabulary,
        geo: GeoLookup | None = None,
    ) -> None:
        self.settings = settings
        self.pseudo = pseudonymiser
        self.vocabulary = vocabulary
        self.geo = geo

    def subject(self, event: EventIn, client: ClientContext, where: str = "") -> tuple[str, bool]:
        """``(pseudonym, anonymous)`` of the event's subject: user_id, else anonymous_id, else the visitor cookie."""
        if event.user_id:
            return self.pseudo.user(event.user_id), False
        visitor = event.anonymous_id or client.visitor_id
        if not visitor:
            raise BadEvent(f"{where}user_id", f"{where}user_id is required (or anonymous_id, or the visitor cookie)")
        return self.pseudo.visitor(visitor), True

    def rows(self, events: list[EventIn], client: ClientContext, received_ms: int, batch: bool) -> list[dict]:
        """One lake row per event (EVENTS_SCHEMA columns, times in epoch ms). Raises BadEvent for a bad timestamp."""
        s = self.settings
        ua: UserAgentClass = classify(client.user_agent)
        country = region = None
        if self.geo is not None and client.ip:
            country, region = self.geo.lookup(client.ip)
        ip = minimise_ip(client.ip, s.ip_mode)
        out = []
        cap = s.max_text_chars
        for index, event in enumerate(events):
            where = f"events[{index}]." if batch else ""
            check_timestamp(event, where, received_ms / 1000, s.max_future_s, s.min_timestamp_s)
            user, anonymous = self.subject(event, client, where)
            client_ms = int(event.timestamp * 1000) if event.timestamp is not None else None
            row = {
                "event_id": event.event_id or os.urandom(16).hex(),
                "user_id": user,
                "anonymous": anonymous,
                "item_id": event.item_id,
                "event_type": event.event_type,
                "value": float(event.value) if event.value is not None else None,
                "client_ts": client_ms,
                "received_ts": received_ms,
                "source": client.source,
                "device_class": ua.device_class,
                "browser_family": ua.browser_family,
                "os_family": ua.os_family,
                "referrer_host": referrer_host(event.referrer or client.referrer),
                "local_hour": local_hour(client_ms, event.tz_offset_min, received_ms),
                "geo_country": country,
                "geo_region": region,
                "ip": ip,
            }
            if event.category is not None:
                row["category"] = event.category
            if event.question_id is not None:
                row["question_id"] = event.question_id
            if event.answer is not None:
                row["answer"] = event.answer[:cap]
            if event.query is not None:
                row["query"] = event.query[:cap]
            if event.request_id is not None:
                row["request_id"] = event.request_id
            if event.event_type == "profile":
                for column in ("age_band", "gender", "country", "language"):
                    row[column] = self.vocabulary.standardise(column, getattr(event, column))
                if event.email is not None:
                    row["identity_hash"] = self.pseudo.identity(normalise_email(event.email))
            out.append(row)
        return out
