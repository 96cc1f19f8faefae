"""The venues' REST klines on the simulator, from :class:`simulator.kline_history.KlineHistory`, rate limited by
:mod:`simulator.rest_limits`:

* Binance ``GET /api/v3/klines`` (symbol, interval, startTime, endTime, limit <= 1000, oldest first, weight 2);
* OKX ``GET /api/v5/market/history-candles`` (instId, bar, after/before exclusive, limit <= 100, newest first);
* Bybit ``GET /v5/market/kline`` (category, symbol, interval, start/end inclusive, limit <= 1000, newest first).

The answer holds the bars whose open time is in range, up to now: the last one may be the open, unfinished one
(OKX marks it ``confirm`` = ``"0"``). Parameters out of range get each venue's own error shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from simulator.instrument import InstrumentSpec, fixed8
from simulator.kline_history import INTERVALS_MS, BadParameter, Bar, KlineHistory, window_start
from simulator.rest_limits import RestLimits, Verdict

BINANCE_INTERVALS = {name: name for name in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d")}
OKX_BARS = {"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1H": "1h", "2H": "2h", "4H": "4h",
            "1D": "1d_hk", "1Dutc": "1d"}
BYBIT_INTERVALS = {"1": "1m", "3": "3m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "120": "2h",
                   "240": "4h", "D": "1d"}
BINANCE_KLINES_WEIGHT = 2


@dataclass
class KlinesRest:
    history: KlineHistory
    specs: dict[str, InstrumentSpec]
    limits: RestLimits

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v3/klines", self.binance), web.get("/api/v5/market/history-candles", self.okx),
                web.get("/v5/market/kline", self.bybit), web.get("/control/rest", self.counters)]

    async def counters(self, _request: web.Request) -> web.Response:
        return _json(self.limits.counters())

    def _inst_of(self, symbol: str) -> str | None:
        return next((inst for inst in self.specs if inst.replace("-", "") == symbol), None)

    # --- Binance ------------------------------------------------------------------------------------------
    async def binance(self, request: web.Request) -> web.Response:
        verdict = self.limits.venues["binance"].check(BINANCE_KLINES_WEIGHT)
        headers = {"X-MBX-USED-WEIGHT-1M": str(verdict.used)}
        if not verdict.allowed:
            return _binance_refusal(verdict, headers)
        q = request.query
        inst = self._inst_of(q.get("symbol", ""))
        interval = BINANCE_INTERVALS.get(q.get("interval", ""))
        if inst is None or interval is None:
            code, msg = (-1121, "Invalid symbol.") if inst is None else (-1120, "Invalid interval.")
            return _json({"code": code, "msg": msg}, status=400, headers=headers)
        try:
            limit = _int(q, "limit", 500, 1, 1000)
            start, end = _forward_range(q.get("startTime"), q.get("endTime"), interval, limit)
            bars = self.history.bars(inst, interval, start, end)
        except BadParameter as err:
            return _json({"code": -1100, "msg": str(err)}, status=400, headers=headers)
        bars = bars[:limit] if q.get("startTime") is not None else bars[-limit:]
        spec, span = self.specs[inst], INTERVALS_MS[interval]
        rows = [[b.open_ms, fixed8(b.open, spec.price_decimals), fixed8(b.high, spec.price_decimals),
                 fixed8(b.low, spec.price_decimals), fixed8(b.close, spec.price_decimals),
                 fixed8(b.lots, spec.size_decimals), b.open_ms + span - 1,
                 fixed8(b.quote, spec.price_decimals + spec.size_decimals), b.trades, "0.00000000", "0.00000000",
                 "0"] for b in bars]
        return _json(rows, headers=headers)

    # --- OKX ----------------------------------------------------------------------------------------------
    async def okx(self, request: web.Request) -> web.Response:
        verdict = self.limits.venues["okx"].check()
        if not verdict.allowed:
            return _json({"msg": "Too Many Requests", "code": "50011"}, status=429)
        q = request.query
        inst = q.get("instId", "")
        if inst not in self.specs:
            return _json({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        interval = OKX_BARS.get(q.get("bar", "1m"))
        try:
            if interval is None:
                msg = "Parameter bar error"
                raise BadParameter(msg)
            limit = _int(q, "limit", 100, 1, 100)
            after, before = _int(q, "after", 2**62, 0, 2**62), _int(q, "before", -1, -1, 2**62)
            span = INTERVALS_MS[interval]
            # the newest ``limit`` bars with before < open time < after
            top = min(after - 1, int(time.time() * 1000))
            bars = self.history.bars(inst, interval, max(before + 1, top - (limit + 1) * span), top)
        except BadParameter as err:
            return _json({"code": "51000", "msg": str(err), "data": []})
        bars = [b for b in bars if before < b.open_ms < after][-limit:]
        now_ms = int(time.time() * 1000)
        spec = self.specs[inst]
        rows = [[str(b.open_ms), spec.price_str(b.open), spec.price_str(b.high), spec.price_str(b.low),
                 spec.price_str(b.close), spec.size_str(b.lots), _quote(spec, b), _quote(spec, b),
                 "1" if b.open_ms + span <= now_ms else "0"] for b in reversed(bars)]
        return _json({"code": "0", "msg": "", "data": rows})

    # --- Bybit --------------------------------------------------------------------------------------------
    async def bybit(self, request: web.Request) -> web.Response:
        verdict = self.limits.venues["bybit"].check()
        headers = {"X-Bapi-Limit": str(verdict.used + verdict.remaining),
                   "X-Bapi-Limit-Status": str(verdict.remaining),
                   "X-Bapi-Limit-Reset-Timestamp": str(verdict.reset_ms)}
        if not verdict.allowed:
            return _bybit(10006, "Too many visits!", {}, status=403, headers=headers)
        q = request.query
        inst = self._inst_of(q.get("symbol", ""))
        interval = BYBIT_INTERVALS.get(q.get("interval", ""))
        if q.get("category", "") not in ("spot", "linear", "inverse") or inst is None or interval is None:
            return _bybit(10001, "params error: symbol, interval or category invalid", {}, headers=headers)
        try:
            limit = _int(q, "limit", 200, 1, 1000)
            span = INTERVALS_MS[interval]
            end = min(_int(q, "end", 2**62, 0, 2**62), int(time.time() * 1000))
            start = _int(q, "start", window_start(interval, end) - (limit - 1) * span, 0, 2**62)
            bars = self.history.bars(inst, interval, max(start, end - (limit + 1) * span), end)
        except BadParameter as err:
            return _bybit(10001, str(err), {}, headers=headers)
        bars = [b for b in bars if b.open_ms >= start][-limit:]
        spec = self.specs[inst]
        rows = [[str(b.open_ms), spec.price_str(b.open), spec.price_str(b.high), spec.price_str(b.low),
                 spec.price_str(b.close), spec.size_str(b.lots), _quote(spec, b)] for b in reversed(bars)]
        result = {"symbol": inst.replace("-", ""), "category": q["category"], "list": rows}
        return _bybit(0, "OK", result, headers=headers)


def _forward_range(start: str | None, end: str | None, interval: str, limit: int) -> tuple[int, int]:
    """Binance's range: from ``startTime`` forward ``limit`` bars, else the ``limit`` bars up to ``endTime``."""
    span = INTERVALS_MS[interval]
    end_ms = _num(end, "endTime") if end is not None else int(time.time() * 1000)
    if start is not None:
        start_ms = _num(start, "startTime")
        return start_ms, min(end_ms, start_ms + limit * span - 1)
    return window_start(interval, end_ms) - (limit - 1) * span, end_ms


def _num(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise BadParameter(msg) from None


def _int(q: Any, name: str, default: int, low: int, high: int) -> int:
    value = _num(q[name], name) if name in q else default
    if not low <= value <= high:
        msg = f"Parameter {name} error: {value} is outside [{low}, {high}]"
        raise BadParameter(msg)
    return value


def _quote(spec: InstrumentSpec, bar: Bar) -> str:
    decimals = spec.price_decimals + spec.size_decimals
    whole, frac = divmod(bar.quote, 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0") if decimals else str(whole)
    return text.rstrip(".")


def _binance_refusal(verdict: Verdict, headers: dict[str, str]) -> web.Response:
    headers = {**headers, "Retry-After": str(verdict.retry_after_s)}
    if verdict.status == 418:
        msg = f"Way too much request weight used; IP banned until {verdict.reset_ms}."
    else:
        msg = "Too much request weight used; current limit exceeded. Please use WebSocket Streams."
    return _json({"code": -1003, "msg": msg}, status=verdict.status, headers=headers)


def _bybit(code: int, msg: str, result: dict[str, Any], *, status: int = 200,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": int(time.time() * 1000)}
    return _json(body, status=status, headers=headers)


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)
