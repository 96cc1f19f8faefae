"""Binance REST ``/api/v3/depth`` on the simulator: request weight, recorded answers, and the stale-snapshot fault.

* Request weight by ``limit`` as Binance counts it (1-100: 5, 101-500: 25, 501-1000: 50, 1001-5000: 250),
  in the same Binance window as ``/api/v3/klines`` (:mod:`simulator.rest_limits`: one weight budget per IP):
  over the limit HTTP 429 with ``Retry-After``, a request before that time HTTP 418; every answer carries
  ``X-MBX-USED-WEIGHT-1M``. ``GET /control/rest`` shows what was used.
* With ``--replay``, a symbol's recorded REST bodies are served in order (the last one again after that).
* The ``stale_snapshot`` fault (``inst``): the book as it is when the fault is set is kept and served to that
  instrument's next depth request, by which time the stream has moved on: a snapshot older than the stream
  (``lastUpdateId`` + 1 below the first buffered ``U``), which a client must detect and fetch again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.faults import FaultError
from simulator.klines_rest import _binance_refusal
from simulator.rest_limits import VenueLimiter

if TYPE_CHECKING:
    from simulator.binance import BinanceVenue


def depth_weight(limit: int) -> int:
    """Binance spot ``GET /api/v3/depth`` request weight."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    return 50 if limit <= 1000 else 250


def _error(code: int, msg: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"code": code, "msg": msg}), content_type="application/json",
                        headers=headers)


class BinanceDepthRest:
    """``GET /api/v3/depth`` (and ``/api/v1/depth``) of one :class:`~simulator.binance.BinanceVenue`."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.venue = venue
        self.limiter: VenueLimiter | None = None  # set by the app: shared with /api/v3/klines
        self.served: dict[str, int] = {}  # symbol -> bodies served (recorded or synthetic)
        self.stale: dict[str, dict[str, Any]] = {}  # inst -> the body kept by a stale_snapshot fault
        venue.engine.book_faults["stale_snapshot"] = self.fault

    def fault(self, kind: str, inst: str) -> dict[str, Any]:
        if inst not in self.venue.books:
            msg = f"fault {kind!r}: {inst!r} is not a Binance spot pair"
            raise FaultError(msg)
        book = self.venue.book(inst)
        self.stale[inst] = {"lastUpdateId": book["u"], "bids": book["bids"], "asks": book["asks"]}
        return {"venue": "binance", "last_update_id": book["u"]}

    async def handle(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "").upper()
        try:
            limit = max(1, min(5000, int(request.query.get("limit", "100"))))
        except ValueError:
            limit = -1
        headers: dict[str, str] = {}
        if self.limiter is not None:
            verdict = self.limiter.check(depth_weight(max(limit, 1)))
            headers["X-MBX-USED-WEIGHT-1M"] = str(verdict.used)
            if not verdict.allowed:
                return _binance_refusal(verdict, headers)
        if limit < 0:
            return _error(-1100, "Illegal characters found in parameter 'limit'.", headers)
        recorded = self.venue.engine.recordings.binance_rest_depth.get(symbol)
        if recorded:
            n = self.served.get(symbol, 0)
            self.served[symbol] = n + 1
            return web.Response(text=recorded[min(n, len(recorded) - 1)], content_type="application/json",
                                headers=headers)
        inst = self.venue.spot.get(symbol.lower())
        if inst is None:
            return _error(-1121, "Invalid symbol.", headers)
        self.served[symbol] = self.served.get(symbol, 0) + 1
        body = self.stale.pop(inst, None)
        if body is None:
            book = self.venue.book(inst)
            body = {"lastUpdateId": book["u"], "bids": book["bids"], "asks": book["asks"]}
        body = {**body, "bids": body["bids"][:limit], "asks": body["asks"][:limit]}
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)
