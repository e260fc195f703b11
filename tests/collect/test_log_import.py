"""Server-log import on real files: each format parses, the rules name items and event types, bots and malformed
lines are dropped and counted (by line number), gzip works, a re-import replaces instead of duplicating, nothing raw
(IP, User-Agent, user id) reaches the lake's Parquet, the CLI answers with exit codes and one-line errors, and the
shipped example log imports cleanly with the demo rules."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recstack.collect.log_formats import parse, read_chunks, split_lines
from recstack.collect.log_import import import_log
from recstack.collect.log_rules import RulesError, load_rules, parse_rules
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.settings import CollectSettings
from recstack.config import collect_settings
from recstack.data import lake

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_LOG = REPO / "data" / "examples" / "access.log"
DEMO_RULES = REPO / "configs" / "log_rules" / "demo.yaml"
KEY = "test-key-" + "x" * 40
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTACK_HMAC_KEY", KEY)


def settings(lake_dir: Path, *overrides: str) -> CollectSettings:
    return collect_settings([f"lake={lake_dir}", *overrides])


def combined(
    ip: str,
    target: str,
    *,
    status: int = 200,
    ua: str = FIREFOX,
    user: str = "-",
    method: str = "GET",
    when: str = "02/Nov/2026:10:15:00 +0100",
    referrer: str = "https://www.example.org/a/b?q=1",
) -> str:
    return f'{ip} - {user} [{when}] "{method} {target} HTTP/1.1" {status} 512 "{referrer}" "{ua}"'


def write_log(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


def rows(lake_dir: Path) -> list[dict]:
    table = lake.read_table(lake_dir, "events")
    return sorted(table.to_pylist(), key=lambda row: row["event_id"])


# --- formats ---------------------------------------------------------------------------------------------------------


def test_combined_and_common_parse_every_field() -> None:
    lines = [
        combined("203.0.113.7", "/movie/12?src=rec", user="alice"),
        # escaped quotes (Apache writes \"), CRLF line end, and an Nginx field after the User-Agent
        '198.51.100.2 - - [02/Nov/2026:23:59:59 -0500] "GET /a\\"b HTTP/1.1" 404 - "-" "Bot \\"x\\"" "10.0.0.1"\r',
        '2001:db8::1 - - [02/Nov/2026:10:15:00 +0000] "-" 400 0 "-" "-"',  # no request line: parsed, no target
    ]
    table = parse(split_lines("\n".join(lines).encode()), "combined").to_pylist()
    first, second, third = table
    assert first["ok"] and first["ip"] == "203.0.113.7" and first["remote_user"] == "alice"
    assert first["time"].isoformat() == "2026-11-02T09:15:00+00:00"  # the log's +0100 made UTC
    assert (first["method"], first["target"], first["status"]) == ("GET", "/movie/12?src=rec", 200)
    assert first["referrer"] == "https://www.example.org/a/b?q=1" and first["user_agent"] == FIREFOX
    assert second["ok"] and second["target"] == '/a\\"b' and second["status"] == 404
    assert second["user_agent"] == 'Bot \\"x\\"' and second["remote_user"] is None
    assert second["time"].isoformat() == "2026-11-03T04:59:59+00:00"
    assert third["ok"] and third["target"] is None and third["status"] == 400

    common = parse(
        split_lines(b'203.0.113.7 - bob [02/Nov/2026:10:15:00 +0100] "POST /cart/add/3 HTTP/1.0" 200 9\n'), "common"
    ).to_pylist()[0]
    assert common["ok"] and common["remote_user"] == "bob" and common["method"] == "POST"
    assert common["target"] == "/cart/add/3" and common["user_agent"] is None


def test_json_lines_accept_the_documented_keys() -> None:
    lines = [
        {
            "time": "2026-11-02T09:15:00.250Z",
            "remote_addr": "203.0.113.7",
            "request": "GET /movie/5 HTTP/1.1",
            "status": 200,
            "http_user_agent": FIREFOX,
            "http_referer": "https://a.example/x",
            "user_id": "u42",
        },
        {
            "timestamp": 1793610900,
            "ip": "198.51.100.1",
            "method": "POST",
            "path": "/checkout/9",
            "status": "200",
            "user_agent": IPHONE,
            "user": "-",
        },
        {
            "time_local": "02/Nov/2026:10:15:00 +0100",
            "remote_addr": "2001:db8::5",
            "request_uri": "/movie/7",
            "request_method": "GET",
            "status": 304,
        },
        {"request": "GET /movie/5 HTTP/1.1", "status": 200},  # no time: malformed
        [1, 2],  # not an object: malformed
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    out = parse(split_lines(text.encode()), "json").to_pylist()
    assert [row["ok"] for row in out] == [True, True, True, False, False, False]
    assert out[0]["time"].isoformat() == "2026-11-02T09:15:00.250000+00:00"
    assert (out[0]["method"], out[0]["target"], out[0]["remote_user"]) == ("GET", "/movie/5", "u42")
    assert out[0]["referrer"] == "https://a.example/x" and out[0]["user_agent"] == FIREFOX
    assert out[1]["time"].isoformat() == "2026-11-02T09:15:00+00:00" and out[1]["remote_user"] is None
    assert (out[1]["method"], out[1]["target"], out[1]["status"]) == ("POST", "/checkout/9", 200)
    assert out[2]["time"].isoformat() == "2026-11-02T09:15:00+00:00" and out[2]["target"] == "/movie/7"


def test_chunks_hold_exactly_n_lines_whatever_the_read_sizes() -> None:
    rng = random.Random(3)
    text = b"".join(b"x" * rng.randint(0, 30) + b"\n" for _ in range(1000)) + b"no newline at the end"
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    chunks = list(read_chunks(pieces, 64))
    assert b"".join(bytes(data) for data, _ in chunks) == text
    assert [len(split_lines(data, ends)) for data, ends in chunks] == [64] * 15 + [41]
    for data, ends in chunks:
        assert list(ends) == [i for i, byte in enumerate(bytes(data)) if byte == 10]


# --- rules -----------------------------------------------------------------------------------------------------------


def test_rules_map_urls_to_items_and_event_types(tmp_path: Path) -> None:
    rules = load_rules(DEMO_RULES) + parse_rules(
        [{"pattern": r"^/u/(?P<user>[a-z]+)/likes/(?P<item>[0-9]+)$", "event_type": "click", "status": ["2xx", 302]}]
    )
    log = write_log(
        tmp_path / "access.log",
        [
            combined("203.0.113.1", "/movie/5?src=rec"),  # click: the first rule that matches wins
            combined("203.0.113.1", "/movie/7"),  # view
            combined("203.0.113.1", "/cart/add/9", method="POST"),  # add_to_cart
            combined("203.0.113.1", "/checkout/3", method="POST", user="carol"),  # purchase, signed in
            combined("203.0.113.1", "/cart/add/9"),  # GET: the rule says POST -> unmatched
            combined("203.0.113.1", "/static/app.css"),  # unmatched
            combined("203.0.113.1", "/healthz"),  # unmatched
            combined("203.0.113.1", "/movie/99999", status=404),  # matched, status not accepted
            combined("203.0.113.1", "/u/dora/likes/11", status=302),  # user from the pattern, 302 accepted
        ],
    )
    summary = import_log(log, "combined", rules, settings(tmp_path / "lake"))
    assert summary.lines == 9 and summary.events == 5
    assert summary.skipped == {"malformed": 0, "bot": 0, "unmatched": 3, "status": 1, "erased": 0, "no_consent": 0}
    assert summary.by_type == {"click": 2, "view": 1, "add_to_cart": 1, "purchase": 1}
    got = {(row["item_id"], row["event_type"]) for row in rows(tmp_path / "lake")}
    assert got == {("5", "click"), ("7", "view"), ("9", "add_to_cart"), ("3", "purchase"), ("11", "click")}
    pseudonyms = Pseudonymiser(KEY.encode())
    by_item = {row["item_id"]: row for row in rows(tmp_path / "lake")}
    assert by_item["3"]["user_id"] == pseudonyms.user("carol") and by_item["3"]["anonymous"] is False
    assert by_item["11"]["user_id"] == pseudonyms.user("dora") and by_item["11"]["anonymous"] is False
    assert by_item["7"]["user_id"] == pseudonyms.visitor(f"203.0.113.1|{FIREFOX}") and by_item["7"]["anonymous"]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"pattern": "^/a"}, "expected a non-empty YAML list"),
        ([], "expected a non-empty YAML list"),
        ([{"pattern": "^/movie/([0-9]+)", "event_type": "view"}], "write (?:...) for a group"),
        ([{"pattern": "^/movie/(?P<id>[0-9]+)", "event_type": "view"}], "no (?P<item>...) group"),
        ([{"pattern": "^/m/(?P<item>[0-9]+", "event_type": "view"}], "rule 1: bad pattern"),
        ([{"pattern": "^/m/(?P<item>x)(?=y)", "event_type": "view"}], "rule 1: bad pattern"),
        ([{"pattern": "^/m/(?P<item>x)(?P<shop>y)", "event_type": "view"}], "names group(s) ['shop']"),
        (
            [{"pattern": "^/m/(?P<item>x)", "event_type": "view"}, {"pattern": "^/(?P<item>x)", "event_type": "like"}],
            "rule 2: unknown event_type 'like'",
        ),
        ([{"pattern": "^/m/(?P<item>x)", "event_type": "view", "method": ["GET"]}], "unknown key(s) ['method']"),
        ([{"pattern": "^/m/(?P<item>x)", "event_type": "view", "status": "ok"}], "status 'ok' is not a code"),
        ([{"pattern": "^/m/(?P<item>x)", "event_type": "view", "methods": [1]}], "methods must be a list"),
    ],
)
def test_bad_rules_are_clear_errors(rules: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    assert message in str(raised.value) and str(path) in str(raised.value)


def test_rules_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("- pattern: '^/a\n  event_type: [view\n")
    with pytest.raises(RulesError, match="is not valid YAML"):
        load_rules(path)


# --- what is dropped, and how it is reported ---------------------------------------------------------------------


def test_bots_are_dropped_by_user_agent_class(tmp_path: Path) -> None:
    log = write_log(
        tmp_path / "access.log",
        [
            combined("66.249.66.1", "/movie/1", ua=GOOGLEBOT),
            combined("40.77.167.1", "/movie/2", ua=BINGBOT),
            combined("203.0.113.9", "/movie/3", ua=IPHONE),
        ],
    )
    summary = import_log(log, "combined", load_rules(DEMO_RULES), settings(tmp_path / "lake"))
    assert summary.skipped["bot"] == 2 and summary.events == 1
    (row,) = rows(tmp_path / "lake")
    assert (row["item_id"], row["device_class"], row["os_family"]) == ("3", "mobile", "iOS")


def test_malformed_lines_are_counted_and_named_by_line_number(tmp_path: Path) -> None:
    good = combined("203.0.113.9", "/movie/3")
    lines = [good]
    for n in range(25):
        lines += [("", "complete garbage", good[: 30 + n])[n % 3], good]
    raw = "".join(line + "\n" for line in lines).encode() + b"\xff\xfe not utf-8 \x80\n" + good.encode()  # no final \n
    log = tmp_path / "access.log"
    log.write_bytes(raw)
    summary = import_log(log, "combined", load_rules(DEMO_RULES), settings(tmp_path / "lake"), lines_per_chunk=16)
    bad = [number for number, line in enumerate(lines, 1) if line != good] + [len(lines) + 1]
    assert summary.lines == len(lines) + 2
    assert summary.skipped["malformed"] == 26 and summary.events == 27
    assert list(summary.malformed_lines) == bad[:20]
    text = summary.text()
    assert "26 malformed" in text and f"malformed lines: {', '.join(map(str, bad[:20]))} (first 20 of 26)" in text


def test_gzip_input_and_the_same_log_reimported_replaces(tmp_path: Path) -> None:
    lines = [combined(f"203.0.113.{n}", f"/movie/{n}", when=f"02/Nov/2026:{n % 24:02d}:00:00 +0000") for n in range(40)]
    plain = write_log(tmp_path / "access.log", lines)
    packed = tmp_path / "access.log.1.gz"  # logrotate's name: the same log under another name, in two gzip members
    packed.write_bytes(gzip.compress(plain.read_bytes()[:1000]) + gzip.compress(plain.read_bytes()[1000:]))
    rules, lake_dir = load_rules(DEMO_RULES), tmp_path / "lake"
    first = import_log(plain, "combined", rules, settings(lake_dir), lines_per_chunk=7)
    once = rows(lake_dir)
    assert first.events == 40 and len(once) == 40 and len({row["event_id"] for row in once}) == 40
    again = import_log(packed, "combined", rules, settings(lake_dir), lines_per_chunk=7)
    assert again.events == 40 and rows(lake_dir) == once  # same rows, once
    assert sorted(again.files) == sorted(first.files) and len(lake.parts(lake_dir, "events")) == len(first.files)
    # partitions follow the log's hours, not the import's
    hours = {path.parent.name for path in first.files}
    assert hours == {f"hour={h:02d}" for h in range(24)}

    # fewer rules: the files this import does not rewrite are removed, so the lake holds exactly the new result
    only_one = parse_rules([{"pattern": "^/movie/(?P<item>1)$", "event_type": "view"}])
    fewer = import_log(plain, "combined", only_one, settings(lake_dir), lines_per_chunk=7)
    assert fewer.events == 1 and fewer.removed == len(first.files) - 1
    assert [row["item_id"] for row in rows(lake_dir)] == ["1"]


def test_another_log_with_the_same_name_and_first_line_does_not_overwrite(tmp_path: Path) -> None:
    rules, lake_dir = load_rules(DEMO_RULES), tmp_path / "lake"
    shared = combined("203.0.113.1", "/movie/1")  # two servers behind one balancer: same request, same second
    for server in ("a", "b"):
        (tmp_path / server).mkdir()
        log = write_log(tmp_path / server / "access.log", [shared, combined(f"198.51.100.{ord(server)}", "/movie/2")])
        import_log(log, "combined", rules, settings(lake_dir))
    assert len(rows(lake_dir)) == 4


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    lines = [combined("203.0.113.1", f"/movie/{n}") for n in range(1, 2001)]
    packed = gzip.compress("".join(line + "\n" for line in lines).encode())
    log = tmp_path / "access.log.gz"
    log.write_bytes(packed[: len(packed) // 2])
    summary = import_log(log, "combined", load_rules(DEMO_RULES), settings(tmp_path / "lake"))
    assert 0 < summary.events < 2000 and summary.lines - summary.events <= 1  # at most the cut line is malformed
    assert summary.problems == (
        "the gzip stream ends early (still being written?); the lines before the cut are imported",
    )
    assert "warning: the gzip stream ends early" in summary.text()


# --- minimisation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ip_mode", ["drop", "truncate"])
def test_no_raw_ip_user_agent_or_user_id_in_the_lake(tmp_path: Path, ip_mode: str) -> None:
    raw_ip, raw_user = "203.0.113.77", "alice.smith@example.org"
    log = write_log(
        tmp_path / "access.log",
        [
            combined(raw_ip, "/movie/1", user=raw_user, ua=IPHONE, referrer="https://mail.example.com/inbox?id=secret"),
            combined(raw_ip, "/movie/2", ua=IPHONE),
            combined("2001:db8:abcd:12::99", "/movie/3", ua=FIREFOX),
        ],
    )
    import_log(log, "combined", load_rules(DEMO_RULES), settings(tmp_path / "lake", f"ip_mode={ip_mode}"))
    cells = [
        str(value)
        for path in lake.parts(tmp_path / "lake", "events")
        for row in pq.read_table(path).to_pylist()
        for value in row.values()
        if value is not None
    ]
    text = "\n".join(cells)
    for raw in (raw_ip, "2001:db8:abcd:12::99", raw_user, "alice", IPHONE, FIREFOX, "Mobile/15E148", "inbox", "secret"):
        assert raw not in text, raw
    got = rows(tmp_path / "lake")
    assert {row["referrer_host"] for row in got} == {"mail.example.com", "www.example.org"}
    assert {row["source"] for row in got} == {"log"} and all(len(row["user_id"]) == 32 for row in got)
    assert all(row["client_ts"] == row["received_ts"] for row in got)
    expected_ips = {None} if ip_mode == "drop" else {"203.0.113.0", "2001:db8:abcd::"}
    assert {row["ip"] for row in got} == expected_ips


# --- the CLI and the shipped example ---------------------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstack.cli.data", "ingest-logs", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RECSTACK_HMAC_KEY": KEY},
    )


def cli_no_consent_needed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI for a log with a legal basis of its own (consent not required)."""
    return cli(*args, "collector.consent_required=false", cwd=cwd)


def test_cli_summary_and_one_line_errors(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    done = cli_no_consent_needed(f"path={EXAMPLE_LOG}", f"rules={DEMO_RULES}", f"lake={lake_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3,000 lines read" in done.stdout and "lines/s" in done.stdout and "malformed lines: " in done.stdout
    assert lake.parts(lake_dir, "events") and not (tmp_path / "outputs").exists()

    missing = cli(f"path={tmp_path / 'nope.log'}", f"rules={DEMO_RULES}", f"lake={lake_dir}", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"recstack-data ingest-logs: error: no such log file: {tmp_path / 'nope.log'}"

    bad = tmp_path / "bad.yaml"
    bad.write_text("- pattern: '^/movie/(?P<id>[0-9]+)'\n  event_type: view\n")
    rejected = cli(f"path={EXAMPLE_LOG}", f"rules={bad}", f"lake={lake_dir}", cwd=tmp_path)
    assert rejected.returncode == 2 and len(rejected.stderr.strip().splitlines()) == 1
    assert rejected.stderr.startswith(f"recstack-data ingest-logs: error: {bad}, rule 1: pattern")


def test_the_shipped_example_imports_cleanly(tmp_path: Path) -> None:
    summary = import_log(EXAMPLE_LOG, "combined", load_rules(DEMO_RULES), settings(tmp_path / "lake"))
    got = rows(tmp_path / "lake")
    assert summary.lines == 3000 and summary.events == len(got) > 1000
    assert set(summary.by_type) == {"view", "click", "add_to_cart", "purchase"}
    assert all(s > 0 for k, s in summary.skipped.items() if k not in ("erased", "no_consent"))  # each way is in it
    assert summary.skipped["malformed"] == len(summary.malformed_lines) < 20  # all of them named
    assert {row["item_id"] for row in got} <= {str(i) for i in range(1, 1683)}
    assert any(not row["anonymous"] for row in got) and sum(row["anonymous"] for row in got) > len(got) / 2
    assert len({row["received_ts"].date() for row in got}) >= 3
    devices = {row["device_class"] for row in got}
    assert devices >= {"desktop", "mobile"} and "bot" not in devices


def test_the_example_log_is_what_its_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_access_log", EXAMPLE_LOG.with_name("make_access_log.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "".join(line + "\n" for line in module.lines(3000)) == EXAMPLE_LOG.read_text(encoding="utf-8")


def test_erased_people_are_not_imported_again(tmp_path: Path) -> None:
    """Re-importing an old log after an erasure must not bring the person back: their lines are skipped."""
    rules, lake_dir = load_rules(DEMO_RULES), tmp_path / "lake"
    first = import_log(EXAMPLE_LOG, "combined", rules, settings(lake_dir))
    table = lake.read_table(lake_dir, "events")
    signed_in = [u for u, a in zip(table["user_id"].to_pylist(), table["anonymous"].to_pylist(), strict=True) if not a]
    person = signed_in[0]
    again = import_log(EXAMPLE_LOG, "combined", rules, settings(lake_dir), erased=frozenset({person}))
    after = lake.read_table(lake_dir, "events")["user_id"].to_pylist()
    assert person not in after and again.skipped["erased"] == signed_in.count(person)
    assert again.events == first.events - signed_in.count(person) == len(after)
    assert "of erased people" in again.text()


def test_under_opt_in_only_consenting_users_lines_are_imported(tmp_path: Path) -> None:
    """As at the API door: a subject without analytics consent is not stored (a log's anonymous visitors have no
    consent record at all); the CLI reads the collector's consent records."""
    import uuid

    import redis

    from recstack.collect.producer import consent_key

    rules, lake_dir = load_rules(DEMO_RULES), tmp_path / "lake"
    everyone = import_log(EXAMPLE_LOG, "combined", rules, settings(lake_dir / "all"))
    table = lake.read_table(lake_dir / "all", "events")
    signed_in = [u for u, a in zip(table["user_id"].to_pylist(), table["anonymous"].to_pylist(), strict=True) if not a]
    stream = f"test:{uuid.uuid4().hex[:10]}:collect"
    chosen = settings(lake_dir / "opt-in", f"stream={stream}")
    client = redis.Redis()
    client.hset(consent_key(chosen, signed_in[0]), mapping={"analytics": "1"})
    try:
        done = cli(
            f"path={EXAMPLE_LOG}",
            f"rules={DEMO_RULES}",
            f"lake={lake_dir / 'opt-in'}",
            f"collector.stream={stream}",
            cwd=tmp_path,
        )
    finally:
        client.delete(consent_key(chosen, signed_in[0]))
    assert done.returncode == 0, done.stderr
    kept = lake.read_table(lake_dir / "opt-in", "events")["user_id"].to_pylist()
    assert set(kept) == {signed_in[0]} and len(kept) == signed_in.count(signed_in[0])
    assert f"{everyone.events - len(kept):,} without analytics consent" in done.stdout
