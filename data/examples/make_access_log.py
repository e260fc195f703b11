"""Write a synthetic web-server access log for the demo catalogue (MovieLens-100K item ids "1".."1682"), the same
file for the same seed, so ``data/examples/access.log`` can be regenerated and checked, and the benchmark
(``benchmarks/collect_logs.py``) can make a large one of the same shape.

What is in it, and why (each kind exercises one path of ``recstack-data ingest-logs``, configs/log_rules/demo.yaml):

* page views ``GET /movie/<id>`` (some ``?src=rec``: recommendation clicks), ``POST /cart/add/<id>``,
  ``POST /checkout/<id>``: the events;
* ``/static/...``, ``/favicon.ico``, ``/healthz``, ``/`` and ``/search?q=``: requests no rule matches;
* Googlebot / bingbot / a monitoring bot: dropped by their User-Agent class;
* 404s (unknown movie ids, e.g. ``/movie/99999``), a few 500s and 304s: statuses a rule does not accept;
* a few broken lines (cut off, binary noise, empty): reported as malformed by line number;
* a few signed-in users (the remote-user field), most visitors anonymous (``-``);
* times over ``days`` days in the server's zone (+0100), in order, as servers write them.

Usage: ``python data/examples/make_access_log.py [out=data/examples/access.log] [lines=3000] [seed=7]
[format=combined|common|json] [days=3]``.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

N_ITEMS = 1682
START = datetime(2026, 11, 2, 0, 0, 0, tzinfo=timezone(timedelta(hours=1)))
SIGNED_IN = ("alice", "bob", "carol", "dave", "erin", "u1042", "u2077", "u3141")

_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{b}.{p} "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{p} "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{p} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel {p}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{b}.{p} "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_{p} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.{p} "
    "Mobile/15E148 Safari/604.1",
)
BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "UptimeRobot/2.0 (http://www.uptimerobot.com/)",
)
_ITEM_IDS = range(1, N_ITEMS + 1)
_POPULARITY = list(itertools.accumulate(1 / rank**0.9 for rank in _ITEM_IDS))  # a few popular movies, a long tail
_STATIC = ("/static/app.css", "/static/app.js", "/static/img/logo.png", "/favicon.ico")
_REFERRERS = ("-", "-", "-", "https://www.google.com/", "https://shop.example/", "https://news.example/a/b?c=d")


def user_agents(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct browser User-Agents (versions vary, as in real traffic)."""
    out: set[str] = set()
    while len(out) < n:
        template = rng.choice(_BROWSERS)
        out.add(template.format(v=rng.randint(110, 131), b=rng.randint(1000, 6999), p=rng.randint(0, 9)))
    return sorted(out)


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"2001:db8:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    return f"{rng.choice((198, 203, 192))}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _request(rng: random.Random) -> tuple[str, str, int]:
    """(method, target, status) of one request a person makes."""
    roll = rng.random()
    item = rng.choices(_ITEM_IDS, cum_weights=_POPULARITY)[0]
    if roll < 0.50:
        if rng.random() < 0.03:
            return "GET", f"/movie/{rng.randint(2000, 99999)}", 404
        target = f"/movie/{item}" + ("?src=rec" if rng.random() < 0.2 else "")
        return "GET", target, 500 if rng.random() < 0.005 else 200
    if roll < 0.58:
        return "POST", f"/cart/add/{item}", 200
    if roll < 0.61:
        return "POST", f"/checkout/{item}", 200
    if roll < 0.90:
        return "GET", rng.choice(_STATIC), rng.choice((200, 200, 304))
    if roll < 0.95:
        return "GET", f"/search?q=movie+{rng.randint(1, 50)}", 200
    return "GET", rng.choice(("/", "/healthz")), 200


def lines(n: int, seed: int = 7, fmt: str = "combined", days: int = 3) -> list[str]:
    """The ``n`` lines of the log (without newlines)."""
    rng = random.Random(seed)
    uas = user_agents(max(12, min(n // 1000, 3000)), rng)
    clients = [
        (_ip(rng), rng.choice(uas), rng.choice(SIGNED_IN) if rng.random() < 0.1 else "-")
        for _ in range(max(50, n // 40))
    ]
    step = days * 86400 / n
    broken_every = max(n // 8, 1)
    out = []
    when = START
    for number in range(n):
        when += timedelta(seconds=rng.expovariate(1 / step))
        if number % broken_every == broken_every // 2:
            out.append(rng.choice(("", "\x00\x01 garbage", '203.0.113.9 - - [02/Nov/2026:10:00:00 +0100] "GET /mo')))
            continue
        if rng.random() < 0.08:
            ip, ua, user = _ip(rng), rng.choice(BOTS), "-"
            method, target, status = "GET", f"/movie/{rng.randint(1, N_ITEMS)}", 200
        else:
            ip, ua, user = rng.choice(clients)
            method, target, status = _request(rng)
        out.append(_format(fmt, ip, user, when, method, target, status, rng.randint(200, 90000), rng, ua))
    return out


def _format(
    fmt: str,
    ip: str,
    user: str,
    when: datetime,
    method: str,
    target: str,
    status: int,
    size: int,
    rng: random.Random,
    ua: str,
) -> str:
    referrer = rng.choice(_REFERRERS)
    stamp = when.strftime("%d/%b/%Y:%H:%M:%S %z")
    if fmt == "common":
        return f'{ip} - {user} [{stamp}] "{method} {target} HTTP/1.1" {status} {size}'
    if fmt == "combined":
        return f'{ip} - {user} [{stamp}] "{method} {target} HTTP/1.1" {status} {size} "{referrer}" "{ua}"'
    if fmt == "json":
        record = {
            "time": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "remote_addr": ip,
            "remote_user": None if user == "-" else user,
            "request": f"{method} {target} HTTP/1.1",
            "status": status,
            "body_bytes_sent": size,
            "http_referer": referrer,
            "http_user_agent": ua,
        }
        return json.dumps(record, separators=(",", ":"))
    raise ValueError(f"unknown format {fmt!r}; use combined, common or json")


def write(path: str | Path, n: int, seed: int = 7, fmt: str = "combined", days: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines(n, seed, fmt, days)), encoding="utf-8")
    return path


def main(argv: list[str]) -> None:
    args = dict(arg.split("=", 1) for arg in argv)
    out = write(
        args.get("out", Path(__file__).with_name("access.log")),
        int(args.get("lines", 3000)),
        int(args.get("seed", 7)),
        args.get("format", "combined"),
        int(args.get("days", 3)),
    )
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
