"""The privacy notice (``GET /privacy``), rendered from what the lake declares and how the collector is set.

Every column of the events table is listed under the purpose it is collected for, read from the ``what``/``why``
metadata of :data:`recstack.data.lake.EVENTS_SCHEMA`: the notice cannot drift from what is stored. Retention, the IP
mode, the cookie and the consent rule come from :class:`~recstack.collect.settings.CollectSettings`. Every value is
HTML-escaped, the schema's text included, so nothing in a setting or a column description can inject markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import pyarrow as pa

from recstack.collect.purposes import CONSENT_COOKIE, CONSENT_PURPOSES
from recstack.collect.settings import CollectSettings
from recstack.data.lake import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA

UNDESCRIBED = "not yet described"
"""The purpose under which a column without ``what``/``why`` metadata is listed: shown, never hidden."""


@dataclass(frozen=True)
class Column:
    name: str
    what: str


@dataclass(frozen=True)
class PurposeGroup:
    """The columns collected for one reason; ``purpose`` is the reason's text before its first colon."""

    purpose: str
    reason: str
    columns: tuple[Column, ...]


def columns_by_purpose(schema: pa.Schema = EVENTS_SCHEMA) -> list[PurposeGroup]:
    """The schema's columns grouped by their ``why`` metadata, groups in the order they first appear."""
    groups: dict[str, list[Column]] = {}
    for field in schema:
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        why = meta.get("why", UNDESCRIBED)
        groups.setdefault(why, []).append(Column(field.name, meta.get("what", "(not described yet)")))
    out = []
    for why, columns in groups.items():
        purpose, _, reason = why.partition(":")
        out.append(PurposeGroup(purpose.strip(), reason.strip(), tuple(columns)))
    return out


def _ip_sentence(settings: CollectSettings) -> str:
    if settings.ip_mode == "drop":
        stored = "Your IP address is never stored."
    else:
        stored = (
            "Your IP address is stored only truncated to its network (the first three parts of an IPv4 address, "
            "the first 48 bits of an IPv6 one), which no longer identifies your device."
        )
    if settings.geoip_db:
        return stored + " Before that, your country and region are looked up from it."
    return stored + " It is not used to look up your location."


def _consent_sentence(settings: CollectSettings) -> str:
    if settings.consent_required:
        return (
            "We ask first: until you agree to analytics, nothing you do here is stored. You can change your choice "
            "at any time from the banner on the shop page; the change applies to everything sent after it."
        )
    return (
        "This deployment stores events without asking first (consent_required is off). You can still refuse "
        "from the banner on the shop page, and nothing is stored from then on."
    )


def render_notice(settings: CollectSettings, schema: pa.Schema = EVENTS_SCHEMA) -> str:
    """The whole notice as one HTML page (no external resources, no scripts); ``schema``: the events table's."""
    e = escape
    purposes = "".join(f"<li><strong>{e(name)}</strong>: {e(text)}</li>" for name, text in CONSENT_PURPOSES.items())
    sections = []
    for group in columns_by_purpose(schema):
        rows = "".join(
            f'<tr><th scope="row"><code>{e(c.name)}</code></th><td>{e(c.what)}</td></tr>' for c in group.columns
        )
        heading = e(group.purpose[:1].upper() + group.purpose[1:])
        reason = f"<p>{e(group.reason[:1].upper() + group.reason[1:])}.</p>" if group.reason else ""
        sections.append(
            f"<section><h3>{heading}</h3>{reason}"
            f'<table><thead><tr><th scope="col">Column</th><th scope="col">What it holds</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    shown = "".join(
        f'<tr><th scope="row"><code>{e(c.name)}</code></th><td>{e(c.what)}</td></tr>'
        for group in columns_by_purpose(IMPRESSIONS_SCHEMA)
        for c in group.columns
    )
    days = settings.retention_days
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Privacy notice</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1d2330; }}
table {{ border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; }}
th, td {{ text-align: left; vertical-align: top; padding: 0.35rem 0.6rem; border-bottom: 1px solid #dde1e8; }}
thead th {{ background: #f1f3f7; }}
code {{ font-size: 0.95em; }}
</style>
</head>
<body>
<main>
<h1>Privacy notice</h1>
<p>Policy version <strong>{e(settings.policy_version)}</strong>.</p>

<h2>Your choices</h2>
<p>{e(_consent_sentence(settings))}</p>
<ul>{purposes}</ul>

<h2>What we store and why</h2>
<p>Each event you send is stored as one row with the columns below, grouped by why we collect them. Ids are replaced
by keyed pseudonyms before anything is stored; your browser's User-Agent is reduced to the classes listed.</p>
{"".join(sections)}
<p>When you sign in, we also store a link from your visitor pseudonym to your account pseudonym, and every change of
consent and every erasure is kept in an audit record (pseudonym, time, choice, policy version).</p>

<h2>The recommendations we show you</h2>
<p>Each list of recommendations we show is recorded once, under the same pseudonym, so we can measure how well our
recommendations work (which were clicked, which models do better): </p>
<table><thead><tr><th scope="col">Column</th><th scope="col">What it holds</th></tr></thead><tbody>{shown}</tbody></table>

<h2>Your IP address</h2>
<p>{e(_ip_sentence(settings))}</p>

<h2>Cookies</h2>
<ul>
<li><code>{e(settings.cookie_name)}</code>: a random visitor id set by this site only (first-party, not readable by
scripts), so your choices and recent activity are recognised on your next visit. It expires after {days} days.</li>
<li><code>{e(CONSENT_COOKIE)}</code>: remembers the choice you made in the banner, so it is not asked again.</li>
</ul>

<h2>How long we keep it</h2>
<p>Stored events and recommendation records are deleted {days} days after they were received.</p>

<h2>Your rights</h2>
<p>You can withdraw consent at any time from the shop page's privacy settings, and ask us to erase everything stored
under your id: it is removed from the store (events and recommendation records) and no new events are accepted for
it.</p>
</main>
</body>
</html>
"""
