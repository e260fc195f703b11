"""The gauges file (parsed back with prometheus_client's own parser) and the push to a Pushgateway (a loopback HTTP
receiver standing in for one: no Pushgateway binary here)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from recstack.monitoring import prometheus
from recstack.monitoring.alerts import Alert

ROWS = pd.DataFrame(
    {
        "bundle": ["mf@1", "gcn@1"],
        "experiment": ["exp", "exp"],
        "arm": ["a", "b"],
        "impressions": [100, 120],
        "users": [40, 50],
        "judged": [60, 0],
        "ctr@10": [0.1, 0.2],
        "map@10": [0.25, float("nan")],  # nothing judged: left out, not NaN
        "coverage": [float("nan"), float("nan")],
    }
)
DRIFT = pd.DataFrame(
    {"bundle": ["mf@1"], "experiment": ["exp"], "arm": ["a"], "distribution": ["scores"], "psi": [0.31]}
)
ALERT = Alert(5, "psi", "mf@1", "exp", "a", "scores", 0.31, 0.0, 0.2, "drifted")


def samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_textfile_holds_the_days_gauges(tmp_path: Path) -> None:
    registry = prometheus.build_registry(ROWS, DRIFT, [ALERT], ks=(10,), day_start_s=1.7e9, day_impressions=220)
    path = tmp_path / "textfile" / "recstack.prom"
    prometheus.write(registry, path)
    got = samples(path.read_text())
    labels = (("arm", "a"), ("bundle", "mf@1"), ("experiment", "exp"))
    assert got[("recstack_online_impressions", labels)] == 100
    assert got[("recstack_online_ctr", tuple(sorted((*labels, ("k", "10")))))] == 0.1
    assert got[("recstack_online_map", tuple(sorted((*labels, ("k", "10")))))] == 0.25
    assert ("recstack_online_map", (("arm", "b"), ("bundle", "gcn@1"), ("experiment", "exp"), ("k", "10"))) not in got
    assert not any(name == "recstack_online_coverage" for name, _ in got)
    assert got[("recstack_online_psi", tuple(sorted((*labels, ("distribution", "scores")))))] == 0.31
    assert got[("recstack_monitor_alerts", (("kind", "psi"),))] == 1
    assert got[("recstack_monitor_alerts", (("kind", "metric_drop"),))] == 0
    assert got[("recstack_monitor_day_impressions", ())] == 220
    assert not list(path.parent.glob("*.tmp*"))  # written under a temporary name, then renamed


def test_push_to_a_gateway(tmp_path: Path) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(("PUT", self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        registry = prometheus.build_registry(ROWS, DRIFT, [], ks=(10,), day_start_s=1.7e9)
        prometheus.write(registry, tmp_path / "m.prom", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1
    method, path, body = received[0]
    assert (method, path) == ("PUT", "/metrics/job/recstack_monitor")
    assert b'recstack_online_impressions{arm="a",bundle="mf@1",experiment="exp"} 100.0' in body
