"""``make demo``'s profiles-and-segments step: the lake the collection step filled becomes profiles and segments.

lake (+ the catalogue's categories) --recstack-profiles build--> profiles.parquet, anomalies, Redis profile hashes
                                    --recstack-segments run--> membership, history, summary -> Redis
then the service answers ``GET /segments`` and ``GET /users/{id}/segments`` from Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(argv: list[str], log: Path) -> dict:
    """Run one recstack tool; its summary is its last JSON stdout line, else its stdout as ``text``. Its log goes to
    ``log``."""
    print(f"  {' '.join(argv)}  (log: {log})", flush=True)
    with log.open("w") as stderr:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} {argv[1]} failed (exit {done.returncode}); see {log}")
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else {"text": done.stdout.strip()}


def run_profiles_and_segments(
    base_url: str, out: Path, stream: str, items_csv: Path, api_key: str | None, known_user: str
) -> dict[str, int]:
    """Build profiles and segments over the demo's lake, publish them, and show what the service answers."""
    lake = (out / "lake").resolve()
    common = [f"collector.stream={stream}", f"collector.lake={lake}", f"items_path={items_csv.resolve()}"]
    profiles = _run(
        [_tool("recstack-profiles"), "build", f"out={(out / 'profiles').resolve()}", *common], out / "profiles.log"
    )
    for line in str(profiles.get("text") or json.dumps(profiles)[:300]).splitlines():
        print(f"  {line}", flush=True)
    summary = _run(
        [_tool("recstack-segments"), "run", f"out={(out / 'segments').resolve()}", *common], out / "segments.log"
    )
    sizes: dict[str, int] = summary.get("sizes", {})
    print(
        f"  {summary.get('events', 0):,} events evaluated in {summary.get('seconds', 0)} s; segment sizes:", flush=True
    )
    for name, size in sorted(sizes.items(), key=lambda pair: -pair[1]):
        print(f"    {name:<22} {size:>5}", flush=True)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, timeout=10, headers=headers) as http:
        answer = http.get(f"/users/{known_user}/segments")
        print(f"  GET /users/{known_user}/segments -> {answer.status_code} {answer.text[:300]}", flush=True)
        answer = http.get(f"/users/{known_user}/profile")
        print(f"  GET /users/{known_user}/profile -> {answer.status_code} {answer.text[:300]}...", flush=True)
    print(f"  the segment dashboard: {base_url}/dashboard/segments", flush=True)
    return sizes
