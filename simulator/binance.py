"""Binance spot on the simulator: combined streams ``/stream?streams=a/b``, raw ``/ws`` and ``/ws/<stream>``,
live ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``, server ping frames, REST ``/api/v3/depth``
(:mod:`simulator.binance_books`: request weight, the ``stale_snapshot`` fault).

Streams: ``<sym>@trade``, ``@aggTrade``, ``@depth`` / ``@depth@100ms`` / ``@depth@1000ms`` (one diff per
book step; ``U``/``u`` count every level change, so ``lastUpdateId`` of the REST snapshot chains),
``@kline_<1m|5m|1h|1d>``, ``@ticker`` (24hrTicker, once a second) and ``@bookTicker``.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from cryptoflow.logs import get_logger
from operators.instruments import is_spot
from simulator.binance_books import BinanceDepthRest
from simulator.conn import Conn, Sub, text_frame
from simulator.market import Kline, Step, SyntheticMarket
from simulator.replay import binance_inner
from simulator.venue import PriceCache, VenueBase

if TYPE_CHECKING:
    from simulator.engine import Engine

log = get_logger("simulator.binance")

STREAM_RE = re.compile(
    r"^([a-z0-9]+)@(trade|aggTrade|depth(?:@100ms|@1000ms)?|kline_(?:1m|5m|1h|1d)|ticker|bookTicker)$"
)
DEPTH_KINDS = ("depth", "depth@100ms", "depth@1000ms")


@dataclass
class BinanceBook:
    last_u: int
    last_ticker_ms: int = 0
    last_best: tuple[int, int, int, int] = (0, 0, 0, 0)
    held: bytes | None = None


class BinanceVenue(VenueBase):
    name = "binance"

    def __init__(self, engine: Engine, speed: float, *, ping_interval: float) -> None:
        super().__init__(engine, speed)
        self.server_ping_interval = ping_interval
        rng = random.Random(engine.seed + 1)
        self.spot = {inst.replace("-", "").lower(): inst for inst in engine.markets if is_spot(inst)}
        self.books = {inst: BinanceBook(last_u=rng.randrange(10**9, 5 * 10**10)) for inst in self.spot.values()}
        self.cache = {inst: PriceCache(engine.specs[inst], eight_decimals=True) for inst in self.spot.values()}
        self.depth_rest = BinanceDepthRest(self)

    def known(self, stream: str) -> bool:
        match = STREAM_RE.match(stream)
        return stream in self.engine.recordings.binance or (match is not None and match.group(1) in self.spot)

    # --- sessions and requests ------------------------------------------------------------------------------
    async def on_open(self, conn: Conn) -> None:
        if conn.path == "/stream":
            streams = [s for s in conn.request.query.get("streams", "").split("/") if s]
            self._subscribe(conn, streams, wrap=True)
        elif conn.path.startswith("/ws/"):
            self._subscribe(conn, [conn.path[len("/ws/"):]], wrap=False)
        conn.flush()

    def _subscribe(self, conn: Conn, streams: list[str], *, wrap: bool) -> None:
        for stream in streams:
            if stream in conn.subs or not self.known(stream):
                continue
            sym = stream.split("@", 1)[0]
            sub = Sub(conn, "binance", stream.split("@", 1)[1], self.spot.get(sym, sym.upper()), stream, wrap=wrap)
            self.attach(sub)
            frames = self.engine.recordings.binance.get(stream)
            if frames is not None:
                self.start_replay(sub, frames, None if wrap else binance_inner)

    async def on_text(self, conn: Conn, text: str) -> None:
        try:
            msg = orjson.loads(text)
            method, req_id = msg["method"], msg.get("id")
            params = msg.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise TypeError(params)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._answer(conn, {"error": {"code": 3, "msg": "Invalid JSON: expected a request object"}, "id": None})
            return
        if method == "SUBSCRIBE":
            unknown = [p for p in params if not self.known(p)]
            if unknown:
                self._answer(conn, {"error": {"code": 2, "msg": f"Invalid request: unknown stream {unknown[0]!r}"},
                                    "id": req_id})
                return
            self._answer(conn, {"result": None, "id": req_id})
            self._subscribe(conn, params, wrap=conn.path == "/stream")
        elif method == "UNSUBSCRIBE":
            for stream in params:
                self.detach(conn, stream)
            self._answer(conn, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self._answer(conn, {"result": sorted(conn.subs), "id": req_id})
        else:
            self._answer(conn, {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                                "id": req_id})
        conn.flush()

    def _answer(self, conn: Conn, body: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(body).decode())

    # --- the market moved -----------------------------------------------------------------------------------
    def _emit(self, stream: str, raw: str, faults: list[str] | None = None, book: BinanceBook | None = None) -> None:
        subs = self.topics.get(stream)
        if not subs:
            return
        frames: dict[bool, bytes] = {}
        for sub in subs:
            frame = frames.get(sub.wrap)
            if frame is None:
                frame = frames[sub.wrap] = text_frame(f'{{"stream":"{stream}","data":{raw}}}' if sub.wrap else raw)
            if faults and "drop" in faults:
                continue
            if faults and "reorder" in faults and book is not None:
                book.held = frame  # one subscriber of the reorder keeps the held frame (tests use one)
                continue
            self.send([sub], frame)
            if faults and "duplicate" in faults:
                self.send([sub], frame)
            if book is not None and book.held is not None and not faults:
                self.send([sub], book.held)
        if book is not None and not faults:
            book.held = None

    def on_step(self, inst: str, market: SyntheticMarket, step: Step) -> None:
        book = self.books.get(inst)
        if book is None:
            return
        first = book.last_u + 1
        book.last_u += len(step.bids) + len(step.asks)
        if inst not in self.active:
            return
        sym_l = inst.replace("-", "").lower()
        sym, cache = sym_l.upper(), self.cache[inst]
        if not step.heartbeat:
            streams = [f"{sym_l}@{k}" for k in DEPTH_KINDS if f"{sym_l}@{k}" in self.topics]
            if streams:
                faults = self.engine.faults.take("binance", inst) if self.engine.faults.pending("binance", inst) else []
                bids = ",".join(f'["{cache.price(t)}","{cache.size(q)}"]' for t, q in sorted(step.bids.items(),
                                                                                          reverse=True))
                asks = ",".join(f'["{cache.price(t)}","{cache.size(q)}"]' for t, q in sorted(step.asks.items()))
                raw = (f'{{"e":"depthUpdate","E":{step.ts_ms},"s":"{sym}","U":{first},"u":{book.last_u},'
                       f'"b":[{bids}],"a":[{asks}]}}')
                for stream in streams:
                    self._emit(stream, raw, faults, book)
        for trade in step.trades:
            price, qty, maker = cache.price(trade.tick), cache.size(trade.lots), str(trade.side == "sell").lower()
            if f"{sym_l}@trade" in self.topics:
                self._emit(f"{sym_l}@trade", f'{{"e":"trade","E":{trade.ts_ms},"s":"{sym}","t":{trade.trade_id},'
                           f'"p":"{price}","q":"{qty}","T":{trade.ts_ms},"m":{maker},"M":true}}')
            if f"{sym_l}@aggTrade" in self.topics:
                self._emit(f"{sym_l}@aggTrade", f'{{"e":"aggTrade","E":{trade.ts_ms},"s":"{sym}",'
                           f'"a":{trade.trade_id},"p":"{price}","q":"{qty}","f":{trade.trade_id},'
                           f'"l":{trade.trade_id},"T":{trade.ts_ms},"m":{maker},"M":true}}')
        if step.trades or step.closed:  # (a hidden trade, trade_gap fault, can close klines)
            for interval, kline in market.klines.items():
                stream = f"{sym_l}@kline_{interval}"
                if stream in self.topics:
                    for k in (*[c for c in step.closed if c.interval == interval], kline):
                        self._emit(stream, self._kline(sym, cache, k, step.ts_ms))
        if step.heartbeat:
            return
        bid, ask = market.bids.best(), market.asks.best()
        best = (bid, market.bids.levels[bid], ask, market.asks.levels[ask])
        if best != book.last_best and f"{sym_l}@bookTicker" in self.topics:
            book.last_best = best
            self._emit(f"{sym_l}@bookTicker", f'{{"u":{book.last_u},"s":"{sym}","b":"{cache.price(bid)}",'
                       f'"B":"{cache.size(best[1])}","a":"{cache.price(ask)}","A":"{cache.size(best[3])}"}}')
        if f"{sym_l}@ticker" in self.topics and step.ts_ms - book.last_ticker_ms >= 1000:
            book.last_ticker_ms = step.ts_ms
            self._emit(f"{sym_l}@ticker", self._ticker(sym, cache, market, best, step.ts_ms))

    def _kline(self, sym: str, cache: PriceCache, k: Kline, ts_ms: int) -> str:
        quote = f"{k.quote / 10 ** (cache.spec.price_decimals + cache.spec.size_decimals):.8f}"
        return orjson.dumps({"e": "kline", "E": ts_ms, "s": sym, "k": {
            "t": k.open_ms, "T": k.close_ms, "s": sym, "i": k.interval, "f": k.first_trade_id,
            "L": k.last_trade_id, "o": cache.price(k.open), "c": cache.price(k.close), "h": cache.price(k.high),
            "l": cache.price(k.low), "v": cache.size(k.lots), "n": k.trades, "x": k.closed, "q": quote,
            "V": "0.00000000", "Q": "0.00000000", "B": "0"}}).decode()

    def _ticker(self, sym: str, cache: PriceCache, market: SyntheticMarket, best: tuple[int, int, int, int],
                ts_ms: int) -> str:
        last = market.last_trade
        high, low = market.high_low_24h()
        lots, quote = market.volume_24h()
        scale = 10 ** (cache.spec.price_decimals + cache.spec.size_decimals)
        change = last.tick - market.open_24h
        return orjson.dumps({
            "e": "24hrTicker", "E": ts_ms, "s": sym, "p": _signed(cache, change),
            "P": f"{change / market.open_24h * 100:.3f}",
            "w": f"{quote / max(lots, 1) / 10 ** cache.spec.price_decimals:.8f}",
            "x": cache.price(market.open_24h), "c": cache.price(last.tick), "Q": cache.size(last.lots),
            "b": cache.price(best[0]), "B": cache.size(best[1]), "a": cache.price(best[2]), "A": cache.size(best[3]),
            "o": cache.price(market.open_24h), "h": cache.price(high), "l": cache.price(low), "v": cache.size(lots),
            "q": f"{quote / scale:.8f}", "O": ts_ms - 86_400_000, "C": ts_ms, "F": last.trade_id - market.trade_count,
            "L": last.trade_id, "n": market.trade_count,
        }).decode()

    def on_idle(self, inst: str, market: SyntheticMarket) -> None:
        return None

    # --- faults, control, REST ------------------------------------------------------------------------------
    def malformed(self, inst: str | None) -> int:
        conns = self.conns_of(inst)
        for conn in conns:
            sym = (inst or "BTC-USDT").replace("-", "").lower()
            conn.send_text(f'{{"stream":"{sym}@depth@100ms","data":{{"e":"depthUpdate","E":')
        return len(conns)

    def shutdown_notice(self) -> int:
        for conn in self.conns:
            conn.send_text(f'{{"e":"serverShutdown","E":{int(time.time() * 1000)}}}')
        return len(self.conns)

    def book(self, inst: str) -> dict[str, Any]:
        market, cache = self.engine.markets[inst], self.cache[inst]
        return {
            "u": self.books[inst].last_u,
            "bids": [[cache.price(t), cache.size(market.bids.levels[t])] for t in market.bids.top(400)],
            "asks": [[cache.price(t), cache.size(market.asks.levels[t])] for t in market.asks.top(400)],
        }

    async def rest_depth(self, request: web.Request) -> web.Response:
        return await self.depth_rest.handle(request)  # simulator/binance_books.py

def _signed(cache: PriceCache, ticks: int) -> str:
    return ("-" if ticks < 0 else "") + cache.price(abs(ticks))
