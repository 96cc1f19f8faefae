"""Prometheus metrics of a dataflow process, derived from the one monitoring model (:mod:`connectors.redis.monitoring`).

The sinks that write :class:`~connectors.redis.monitoring.MonitorReport` to ``system:monitoring`` hand the same
reports to :func:`record`, once per batch, so Redis and Prometheus count the same events; nothing else in a
dataflow keeps counters of its own for Prometheus. How a report becomes series (names in the README,
"Prometheus metrics"):

* counters: ``frames_received`` / ``market_frames_received`` -> ``cryptoflow_frames_total{venue}``, ``gaps`` /
  ``market_trade_id_gaps`` -> ``cryptoflow_gaps_total{venue}``, ``resyncs`` -> ``cryptoflow_resyncs_total{venue}``,
  ``<dataflow>:rejected_<reason>`` -> ``cryptoflow_rejected_total{venue,reason}`` (the unprefixed copies and
  ``rejected_messages`` are the same rejections again: not counted twice); every other counter ->
  ``cryptoflow_events_total{venue,name}`` under its ``system:monitoring`` name;
* gauge shares (``sums``): this process's owners' newest shares, summed per venue when scraped:
  ``websocket_connections`` -> ``cryptoflow_ws_connections{venue}``, ``active_pairs`` ->
  ``cryptoflow_active_pairs``, ``market_<venue>_topics`` -> ``cryptoflow_ws_topics{venue}``,
  ``influxdb_write_rate`` -> ``cryptoflow_influxdb_write_rate``, and the shards' cumulative reconnects
  (``collector_reconnects``, ``market_<venue>_reconnects``) -> ``cryptoflow_reconnects_total{venue}`` (a retired
  owner's count is kept, so the counter never goes back).

Latency: :func:`observe_latency` (frame receipt -> the sink's write, per written book or per instrument's newest
trade of a batch) -> ``cryptoflow_latency_seconds{venue}``, the observations behind ``avg_processing_latency``.
Emails: ``cryptoflow_email_jobs_total{outcome}``.

Served by :func:`serve` (``METRICS_PORT``; :func:`cryptoflow.entry.lazy_flow` calls it once per process, after
the flow is built); the metric objects below only register in prometheus_client's default registry at import.
Every series is this process's own: Prometheus sums a cluster's processes (``sum by (venue)``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from connectors.redis.monitoring import MonitorReport

FRAMES = Counter("cryptoflow_frames", "WebSocket data frames received from a venue", ["venue"])
GAPS = Counter("cryptoflow_gaps", "sequence gaps (order books) and trade-id gaps (trades)", ["venue"])
RESYNCS = Counter("cryptoflow_resyncs", "order-book resyncs (a fresh snapshot after a failed check)", ["venue"])
REJECTED = Counter("cryptoflow_rejected", "input rejected as malformed or unexpected, by reason",
                   ["venue", "reason"])
EVENTS = Counter("cryptoflow_events", "every other system:monitoring counter, by its name", ["venue", "name"])
LATENCY = Histogram("cryptoflow_latency_seconds", "frame receipt -> the sink's write (per book or instrument)",
                    ["venue"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
EMAILS = Counter("cryptoflow_email_jobs", "email jobs finished: sent, retried (temporary failure), dead",
                 ["outcome"])

_NAMED = {"frames_received": FRAMES, "market_frames_received": FRAMES, "gaps": GAPS, "market_trade_id_gaps": GAPS,
          "resyncs": RESYNCS}
_DUPLICATE = "rejected_messages"  # the sum of the reasons


def record_counters(counters: Iterable[tuple[str, int]], venue: str = "") -> None:
    """Counter increments under their ``system:monitoring`` names (see the module docstring)."""
    items = [(name, n) for name, n in counters if n]
    prefixed = {name.partition(":")[2] for name, _ in items if ":" in name}
    for name, n in items:
        if ":" in name:
            base = name.partition(":")[2]
            if base.startswith("rejected_") and base != _DUPLICATE:
                REJECTED.labels(venue, base.removeprefix("rejected_")).inc(n)
        elif name == _DUPLICATE or (name.startswith("rejected_") and name in prefixed):
            continue
        elif name in _NAMED:
            _NAMED[name].labels(venue).inc(n)
        else:
            EVENTS.labels(venue, name).inc(n)


class _Shares(Collector):
    """This process's owners' newest gauge shares, summed per venue when scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shares: dict[str, tuple[str, dict[str, float]]] = {}
        self._retired_reconnects: dict[str, float] = {}

    def update(self, owner: str, venue: str, sums: Sequence[tuple[str, float]]) -> None:
        with self._lock:
            self._shares[owner] = (venue, dict(sums))

    def retire(self, owners: Iterable[str]) -> None:
        with self._lock:
            for owner in owners:
                venue, sums = self._shares.pop(owner, ("", {}))
                gone = sum(v for f, v in sums.items() if f.endswith("_reconnects"))
                self._retired_reconnects[venue] = self._retired_reconnects.get(venue, 0.0) + gone

    def collect(self) -> Iterator[Metric]:
        conns = GaugeMetricFamily("cryptoflow_ws_connections", "open WebSocket connections", labels=["venue"])
        topics = GaugeMetricFamily("cryptoflow_ws_topics", "subscribed market-data topics", labels=["venue"])
        reconnects = CounterMetricFamily("cryptoflow_reconnects", "WebSocket reconnects", labels=["venue"])
        pairs = GaugeMetricFamily("cryptoflow_active_pairs", "order books tracked")
        rate = GaugeMetricFamily("cryptoflow_influxdb_write_rate", "orderbook_data points per second")
        per: dict[str, dict[str, float]] = {}
        with self._lock:
            shares = list(self._shares.values())
            for venue, n in self._retired_reconnects.items():
                per.setdefault(venue, {})["reconnects"] = n
        for venue, sums in shares:
            mine = per.setdefault(venue, {})
            for field, value in sums.items():
                key = _gauge_of(field)
                if key:
                    mine[key] = mine.get(key, 0.0) + value
        for venue, values in sorted(per.items()):
            for key, family in (("connections", conns), ("topics", topics), ("reconnects", reconnects)):
                if key in values:
                    family.add_metric([venue], values[key])
        for key, family in (("pairs", pairs), ("rate", rate)):
            if any(key in v for v in per.values()):  # only where a dataflow reports it (the collector)
                family.add_metric([], sum(v.get(key, 0.0) for v in per.values()))
        yield from (conns, topics, reconnects, pairs, rate)


def _gauge_of(field: str) -> str | None:
    if field == "websocket_connections":
        return "connections"
    if field == "active_pairs":
        return "pairs"
    if field == "influxdb_write_rate":
        return "rate"
    if field.endswith("_reconnects"):
        return "reconnects"
    if field.startswith("market_") and field.endswith("_topics"):
        return "topics"
    return None  # per-dataflow copies of the above (collector_connections, market_<venue>_connections)


SHARES = _Shares()
REGISTRY.register(SHARES)


def record(reports: Iterable[MonitorReport], *, retire: Sequence[str] = ()) -> None:
    """Apply one batch's reports (the same ones queued for ``system:monitoring``) to this process's series."""
    for r in reports:
        if r.counters:
            record_counters(r.counters, r.venue)
        if r.owner and r.sums:
            SHARES.update(r.owner, r.venue, r.sums)
    if retire:
        SHARES.retire(retire)


def observe_latency(venue: str, latencies_ns: Iterable[int]) -> None:
    child = LATENCY.labels(venue)
    for ns in latencies_ns:
        child.observe(max(ns, 0) / 1e9)


_served: list[int] = []


def serve(port: int) -> bool:
    """Serve ``/metrics`` on ``port`` (all interfaces) once per process; False when already served.
    Raises :class:`OSError` when the port cannot be bound."""
    if _served:
        return False
    start_http_server(port)
    _served.append(port)
    return True
