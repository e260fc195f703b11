"""The privacy notice lists every lake column under the purpose the lake declares for it, says what the collector's
settings say (consent, retention, IP mode, cookie), and escapes everything it prints."""

from __future__ import annotations

from html.parser import HTMLParser

import pyarrow as pa
import pytest

from recstack.collect.notice import CONSENT_COOKIE, CONSENT_PURPOSES, UNDESCRIBED, columns_by_purpose, render_notice
from recstack.collect.settings import CollectSettings
from recstack.config import collect_settings
from recstack.data.lake import EVENTS_SCHEMA


class _Sections(HTMLParser):
    """Heading (h3) -> the column names in its table's row headers, and whether any script or external URL is used."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self.urls: list[str] = []
        self._heading: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]
        if tag == "h3":
            self._in = "h3"
        elif tag == "code" and self._heading is not None:
            self._in = "code"

    def handle_endtag(self, tag: str) -> None:
        self._in = None if tag in ("h3", "code") else self._in
        if tag == "section":
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._in == "h3":
            self._heading = data
            self.sections[data] = []
        elif self._in == "code" and self._heading is not None:
            self.sections[self._heading].append(data)


def _parse(html: str) -> _Sections:
    parser = _Sections()
    parser.feed(html)
    parser.close()
    return parser


def _settings(*overrides: str) -> CollectSettings:
    return collect_settings(list(overrides))


def test_every_events_column_is_listed_under_its_declared_purpose() -> None:
    parsed = _parse(render_notice(_settings()))
    expected: dict[str, list[str]] = {}
    for field in EVENTS_SCHEMA:
        purpose = field.metadata[b"why"].decode().split(":", 1)[0].strip()
        expected.setdefault(purpose[:1].upper() + purpose[1:], []).append(field.name)
    listed = {heading: names for heading, names in parsed.sections.items() if heading in expected}
    assert listed == expected
    assert sorted(n for names in listed.values() for n in names) == sorted(EVENTS_SCHEMA.names)


def test_groups_follow_the_schema_metadata() -> None:
    groups = columns_by_purpose()
    assert [g.purpose for g in groups] == [
        "operations",
        "personalisation",
        "personalisation and analytics",
        "measurement",
    ]
    operations = groups[0]
    assert {c.name for c in operations.columns} == {
        "event_id",
        "received_ts",
        "source",
        "identity_hash",
        "ip",
        "stream_id",
    }
    assert operations.reason == "exactly-once storage and deduplication"
    assert all(c.what for g in groups for c in g.columns)


def test_a_column_without_metadata_is_shown_not_hidden() -> None:
    schema = pa.schema([*EVENTS_SCHEMA, pa.field("mystery", pa.string())])
    groups = columns_by_purpose(schema)
    assert groups[-1].purpose == UNDESCRIBED and [c.name for c in groups[-1].columns] == ["mystery"]
    assert "mystery" in _parse(render_notice(_settings(), schema)).sections["Not yet described"]


def test_settings_are_what_the_notice_says() -> None:
    html = render_notice(_settings("retention_days=30", "policy_version=2027-01-15", "cookie_name=shop_vid"))
    assert "deleted 30 days after" in html and "expires after 30 days" in html
    assert "2027-01-15" in html and "<code>shop_vid</code>" in html and f"<code>{CONSENT_COOKIE}</code>" in html
    for purpose in CONSENT_PURPOSES:
        assert f"<strong>{purpose}</strong>" in html
    assert "until you agree to analytics, nothing you do here is stored" in html
    assert "without asking first" in render_notice(_settings("consent_required=false"))


@pytest.mark.parametrize(
    ("overrides", "says", "never"),
    [
        (["ip_mode=drop"], "Your IP address is never stored.", "truncated to its network (the first"),
        (["ip_mode=truncate"], "truncated to its network (the first three parts", "is never stored"),
        (["geoip_db=/srv/geo.mmdb"], "your country and region are looked up", "not used to look up your location"),
        ([], "not used to look up your location", "your country and region are looked up"),
    ],
)
def test_ip_mode_and_location_lookup(overrides: list[str], says: str, never: str) -> None:
    html = render_notice(_settings(*overrides))
    assert says in html and never not in html


def test_everything_printed_is_escaped() -> None:
    hostile = "<script>alert(1)</script>&\"'"
    schema = pa.schema(
        [pa.field("evil", pa.string(), metadata={"what": hostile, "why": f"{hostile}: <img src=x onerror=1>"})]
    )
    html = render_notice(_settings().model_copy(update={"policy_version": hostile}), schema)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in html
    parsed = _parse(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags


def test_self_contained_and_pure() -> None:
    settings = _settings()
    html = render_notice(settings)
    parsed = _parse(html)
    assert "script" not in parsed.tags and parsed.urls == []  # no scripts, no external (or any) resources
    assert html == render_notice(settings)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")


def test_purposes_and_cookie_are_the_collectors() -> None:
    """The notice names what the collector implements (its purposes and consent cookie), not a copy that drifts."""
    from recstack.collect import app, producer

    assert tuple(CONSENT_PURPOSES) == producer.PURPOSES
    assert CONSENT_COOKIE == app.CONSENT_COOKIE
