"""``GET /metrics`` of ``cryptoflow serve``: Prometheus text format, one registry per app (names in the README).

* ``cryptoflow_http_requests_total{method,route,status}`` and ``cryptoflow_http_request_duration_seconds{route}``:
  every HTTP request, by route template (``/v1/orderbook/{inst}``, never the instrument itself, so the series stay
  few), including the ones :mod:`service.fastpath` answers; a path no route matched is ``route="unmatched"``;
* the push gateway (:mod:`service.push.gateway`), read from it when scraped (nothing on its hot path):
  ``cryptoflow_push_clients`` (connected, not being closed), ``cryptoflow_push_messages_sent_total``,
  ``cryptoflow_push_slow_consumers_total`` (clients dropped for not reading: their queue is freed and they are
  closed with 4103) and ``cryptoflow_push_refused_total`` (connections over ``PUSH_MAX_CONNECTIONS_PER_IP``);
* the process's CPU, memory and file descriptors (``process_*``).

Each uvicorn worker process has its own registry: with ``--workers N`` a scrape sees the one worker that
answered it. Run one worker per replica (the default) and let Prometheus scrape every replica.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from itertools import accumulate
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import Message, Receive, Scope, Send

ROUTE_KEY = "cryptoflow.route"  # set in the scope by a handler outside the router (the fast path)
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Gateway(Collector):
    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        gw: Any = getattr(self._app.state, "push_gateway", None)
        stats = gw.stats() if gw is not None else {}
        for family, name, key, doc in (
                (GaugeMetricFamily, "cryptoflow_push_clients", "connections", "push gateway clients connected"),
                (CounterMetricFamily, "cryptoflow_push_messages_sent", "sent", "push messages sent to clients"),
                (CounterMetricFamily, "cryptoflow_push_slow_consumers", "slow_closed",
                 "push clients dropped as slow consumers"),
                (CounterMetricFamily, "cryptoflow_push_refused", "refused",
                 "push connections refused (per-address limit)")):
            yield family(name, doc, value=float(stats.get(key, 0)))


BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
_BOUNDS = (*(str(float(b)) for b in BUCKETS), "+Inf")  # the exposition's le values


class _Requests(Collector):
    """The request series as plain counts, turned into Prometheus families only when scraped.

    ``prometheus_client``'s ``labels(...).inc()`` / ``observe()`` take a lock and build the label tuple on
    every call: 10-60 µs a request on the hot routes (about 120 µs in all; bench_api, A/B). Here a request
    costs two dict updates and a bisect; everything runs on the event loop's thread, scrapes included, so
    nothing needs a lock."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # per route: a count per bucket (not cumulative), +Inf last
        self.sums: dict[str, float] = {}

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        counts = self.buckets.get(route)
        if counts is None:
            counts = self.buckets[route] = [0] * (len(BUCKETS) + 1)
            self.sums[route] = 0.0
        counts[bisect_left(BUCKETS, seconds)] += 1  # le is inclusive: the first bound >= seconds
        self.sums[route] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("cryptoflow_http_requests", "HTTP requests answered",
                                       labels=["method", "route", "status"])
        for labels, n in self.counts.items():
            requests.add_metric(list(labels), n)
        yield requests
        duration = HistogramMetricFamily("cryptoflow_http_request_duration_seconds", "HTTP request duration",
                                         labels=["route"])
        for route, counts in self.buckets.items():
            duration.add_metric([route], list(zip(_BOUNDS, accumulate(counts), strict=True)), self.sums[route])
        yield duration


class ServiceMetrics:
    """The app's registry, its request series, and the ASGI wrapper that fills them."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = _Requests()
        self.registry.register(self.requests)
        ProcessCollector(registry=self.registry)
        self.registry.register(_Gateway(app))

    async def track(self, scope: Scope, receive: Receive, send: Send, handle: Handler) -> None:
        status = 500  # what the client gets when the handler raises before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await handle(scope, receive, send_status)
        finally:
            self.requests.observe(scope["method"], _route(scope), str(status), time.perf_counter() - started)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", "") or "/"
    if ROUTE_KEY in scope:
        return str(scope[ROUTE_KEY])
    if scope.get("endpoint") is not None:  # a mount (the web app at /): FastAPI sets its endpoint, not "route"
        return str(scope.get("root_path") or "/")
    return "unmatched"


def install(app: FastAPI) -> ServiceMetrics:
    """``GET /metrics`` on ``app``; the caller wraps its ASGI entry with :meth:`ServiceMetrics.track`."""
    metrics = ServiceMetrics(app)
    app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    return metrics
