"""A real Prometheus (Debian's ``prometheus``) scrapes every dataflow and the service.

The four dataflows run as processes against the simulator, a real redis-server and a real SMTP server, each
with its own ``METRICS_PORT``; the service runs under uvicorn (``cryptoflow serve``) with a push client
subscribed. Prometheus scrapes them every second from a generated config (job = the bytewax.yaml name), and
the test asks its HTTP API until each target is up and the series show real work: frames and latency
observations per venue, analyses, a sent email, HTTP requests by route, a push client and its messages.
The mapping rules of :mod:`connectors.metrics` are checked on their own first (no servers).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest
from websockets.sync.client import connect

from connectors import metrics
from connectors.redis.monitoring import MonitorReport
from cryptoflow.deploy import load
from cryptoflow.servers import free_port, stop_process
from tests.dataflow_helpers import start_dataflow
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
DATAFLOWS = tuple(load(ROOT / "bytewax.yaml").dataflows)
PAIRS = ("BTC-USDT", "ETH-USDT")


def _sample(text: str, series: str, **labels: str) -> float:
    """The value of the one sample ``series{labels...}`` in a text exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{series}{{{want}}} ") or (not labels and line.startswith(f"{series} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def documented_metrics() -> set[str]:
    """The names in the README's "Prometheus metrics" table."""
    section = (ROOT / "README.md").read_text().split("### Prometheus metrics", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(cryptoflow_\w+)`", section, re.MULTILINE))


def test_every_cryptoflow_series_is_documented_in_the_readme() -> None:
    from service.metrics import ServiceMetrics

    families = [*REGISTRY.collect(), *ServiceMetrics(FastAPI()).registry.collect()]
    exposed = {m.name + ("_total" if m.type == "counter" else "") for m in families
               if m.name.startswith("cryptoflow_")}
    assert exposed == documented_metrics()


def test_reports_map_to_named_series_without_counting_a_rejection_twice() -> None:
    before = generate_latest().decode()
    metrics.record([MonitorReport("t/okx/shard-9", sums=(("websocket_connections", 2), ("collector_reconnects", 3)),
                                  counters=(("frames_received", 5), ("gaps", 1), ("resyncs", 2),
                                            ("rejected_messages", 1), ("rejected_t_reason", 1),
                                            ("t:rejected_messages", 1), ("t:rejected_t_reason", 1),
                                            ("t_other_event", 4)), venue="t-venue")])
    after = generate_latest().decode()

    def grew(series: str, **labels: str) -> float:
        return _sample(after, series, **labels) - _sample(before, series, **labels)

    assert grew("cryptoflow_frames_total", venue="t-venue") == 5
    assert (grew("cryptoflow_gaps_total", venue="t-venue"), grew("cryptoflow_resyncs_total", venue="t-venue")) == (1, 2)
    assert grew("cryptoflow_rejected_total", reason="t_reason", venue="t-venue") == 1  # one rejection, four names
    assert grew("cryptoflow_events_total", name="t_other_event", venue="t-venue") == 4
    assert grew("cryptoflow_events_total", name="rejected_messages", venue="t-venue") == 0
    assert _sample(after, "cryptoflow_ws_connections", venue="t-venue") == 2
    assert _sample(after, "cryptoflow_reconnects_total", venue="t-venue") == 3
    metrics.record((), retire=["t/okx/shard-9"])  # a retired shard's connections go, its reconnects stay counted
    retired = generate_latest().decode()
    assert _sample(retired, "cryptoflow_ws_connections", venue="t-venue") == 0
    assert _sample(retired, "cryptoflow_reconnects_total", venue="t-venue") == 3


def test_service_counts_requests_by_route_template(tmp_path: Path, redis_server: Any, redis_db: Any) -> None:
    from cryptoflow.settings import load_settings
    from service.app import WEB_DIST, create_app

    app = create_app(load_settings(redis_url=redis_server.url, data_dir=str(tmp_path)))

    async def main() -> str:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            for path in ("/v1/orderbook/BTC-USDT", "/v1/orderbook/ETH-USDT?depth=401", "/no/such/path",
                         "/index.html"):
                await client.get(path)
            await client.get("/metrics")
            return (await client.get("/metrics")).text

    text = asyncio.run(main())
    nowhere = "/" if (WEB_DIST / "index.html").is_file() else "unmatched"  # the web app's mount takes every path
    requests = {(route, status): _sample(text, "cryptoflow_http_requests_total", method="GET", route=route,
                                         status=status)
                for route, status in (("/v1/orderbook/{inst}", "404"), ("/v1/orderbook/{inst}", "422"),
                                      (nowhere, "404"), ("/metrics", "200"), ("/", "200"))}
    # the fast path's 404 (no book) and FastAPI's 422 (depth 401) under one template, never the instrument;
    # the browser monitor's files (when built) under its mount
    built = nowhere == "/"
    assert requests == {("/v1/orderbook/{inst}", "404"): 1, ("/v1/orderbook/{inst}", "422"): 1,
                        (nowhere, "404"): 1 if built else 2, ("/metrics", "200"): 1, ("/", "200"): 1 if built else 0}
    assert "BTC-USDT" not in text and _sample(text, "cryptoflow_push_clients") == 0


def test_a_metrics_port_in_use_stops_the_dataflow_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where start_http_server binds
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.email_sender"], cwd=ROOT,
                              env={**os.environ, "METRICS_PORT": str(port), "REDIS_URL": "redis://127.0.0.1:1/0"},
                              capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"cryptoflow: email_sender: cannot serve metrics on METRICS_PORT={port}: "), proc.stderr[-3000:]


class Prometheus:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("Prometheus ready", ready, timeout=60, every=0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def values(self, promql: str) -> dict[str, float]:
        """Each result's value, by its labels other than __name__, job and instance (joined as k=v)."""
        out = {}
        for r in self.query(promql):
            key = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())
                           if k not in ("__name__", "job", "instance"))
            out[key] = float(r["value"][1])
        return out


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is not installed: run scripts/bootstrap.sh --servers"
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, str]) -> Prometheus:
        """Started, not yet ready (:meth:`Prometheus.wait_ready`): its start overlaps the targets'."""
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in targets.items()]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return Prometheus(f"http://127.0.0.1:{port}", proc, log)

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.mark.slow
def test_prometheus_scrapes_every_dataflow_and_the_service(
        start_simulator: Any, redis_server: Any, redis_db: Any, smtp_server: Any, start_service: Any,
        start_prometheus: Any, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "3", "--rate", "20")
    redis_db.sadd("config:trading_pairs", *PAIRS)
    ports = {name: free_port() for name in DATAFLOWS}
    serve_port = free_port()
    prom = start_prometheus({**{name: f"127.0.0.1:{port}" for name, port in ports.items()},
                             "serve": f"127.0.0.1:{serve_port}"})
    common = {**sim.env(), "REDIS_URL": redis_server.url, "LOG_FORMAT": "json", "TRADING_PAIRS_POLL_INTERVAL": "1",
              "KLINE_TIMEFRAMES": "1m", "PRICE_ALERTS_ENABLED": "false", "SMTP_HOST": "127.0.0.1",
              "SMTP_PORT": str(smtp_server.port)}
    procs = [start_dataflow(name, {**common, "METRICS_PORT": str(ports[name])}, tmp_path / f"{name}.log")
             for name in DATAFLOWS]
    try:
        service = start_service(env={"REDIS_URL": redis_server.url}, args=["--port", str(serve_port)])
        assert service.url == f"http://127.0.0.1:{serve_port}", service.url
        prom.wait_ready()
        job = {"id": "job-prom", "alert_id": "alert-prom", "to": "ops@example.com", "subject": "Price alert: test",
               "body": "Your price alert fired.\n", "created_at": "2026-11-30T09:00:00.000Z", "attempts": 0}
        redis_db.lpush("queue:email", orjson.dumps(job))

        def all_up() -> dict[str, float]:
            for name, proc in zip(DATAFLOWS, procs, strict=True):
                assert proc.poll() is None, f"{name} exited {proc.returncode}: " + \
                    (tmp_path / f"{name}.log").read_text()[-3000:]
            up = {r["metric"]["job"]: float(r["value"][1]) for r in prom.query("up")}
            return up if up == {**dict.fromkeys(DATAFLOWS, 1.0), "serve": 1.0} else {}

        wait_for("every dataflow and the service up in Prometheus", all_up, timeout=120, every=0.5)

        ws_url = service.url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, open_timeout=30) as ws:
            ws.send(orjson.dumps({"op": "subscribe", "channel": "BTC-USDT@trades"}).decode())
            assert orjson.loads(ws.recv(timeout=30)) == {"result": True, "channel": "BTC-USDT@trades"}
            for path in ("/v1/tickers", "/v1/orderbook/BTC-USDT", "/v1/status"):
                httpx.get(f"{service.url}{path}", timeout=30)

            def scraped(promql: str, want: set[str] | None = None) -> dict[str, float]:
                got = {k: v for k, v in prom.values(promql).items() if v > 0}
                return got if got and (want is None or want <= set(got)) else {}

            venues = {"venue=okx", "venue=binance", "venue=bybit"}
            checks = [
                ('sum by (venue) (cryptoflow_frames_total{job="orderbook_collector"})', {"venue=okx"}),
                ('cryptoflow_latency_seconds_count{job="orderbook_collector"}', {"venue=okx"}),
                ('cryptoflow_active_pairs{job="orderbook_collector"}', None),
                ('sum by (venue) (cryptoflow_frames_total{job="market_data"})', venues),
                ('cryptoflow_latency_seconds_count{job="market_data"}', venues),
                ('cryptoflow_ws_connections{job="market_data"}', venues),
                ('cryptoflow_latency_seconds_count{job="orderbook_analysis"}', {"venue=okx"}),
                ('cryptoflow_email_jobs_total{job="email_sender"}', {"outcome=sent"}),
                ('cryptoflow_http_requests_total{job="serve",route="/v1/tickers"}',
                 {"method=GET,route=/v1/tickers,status=200"}),
                ('cryptoflow_push_clients{job="serve"}', None),
                ('cryptoflow_push_messages_sent_total{job="serve"}', None),
            ]
            for promql, want in checks:
                wait_for(f"{promql} > 0 for {sorted(want or [])}", functools.partial(scraped, promql, want),
                         timeout=60, every=0.5)
    finally:
        for proc in procs:
            stop_process(proc)


def test_request_series_are_cumulative_buckets_with_count_and_sum() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from service.metrics import _Requests

    requests, registry = _Requests(), CollectorRegistry()
    registry.register(requests)
    for seconds in (0.0007, 0.001, 0.003, 20.0):  # 0.001 is in le="0.001": the bound is inclusive
        requests.observe("GET", "/v1/tickers", "200", seconds)
    requests.observe("POST", "/v1/alerts", "422", 0.002)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    tickers = (("route", "/v1/tickers"),)
    assert samples[("cryptoflow_http_requests_total", (("method", "GET"), ("route", "/v1/tickers"),
                                                       ("status", "200")))] == 4
    assert samples[("cryptoflow_http_requests_total", (("method", "POST"), ("route", "/v1/alerts"),
                                                       ("status", "422")))] == 1
    bucket = "cryptoflow_http_request_duration_seconds_bucket"
    assert [samples[(bucket, (("le", le), *tickers))] for le in ("0.001", "0.0025", "0.005", "10.0", "+Inf")] == \
        [2, 2, 3, 3, 4]
    assert samples[("cryptoflow_http_request_duration_seconds_count", tickers)] == 4
    assert samples[("cryptoflow_http_request_duration_seconds_sum", tickers)] == pytest.approx(20.0047)
