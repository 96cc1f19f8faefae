"""Bybit v5 public streams on the simulator: ``/v5/public/spot`` and ``/v5/public/linear`` (the synthetic spot
pairs are offered on both), topics ``orderbook.{1,50,200}`` (+ ``500`` on linear), ``publicTrade``,
``tickers`` and ``kline.{1,5,60,D}``; ``{"op":"ping"}`` answers and subscribe answers.

Book topics start with a snapshot, then deltas of the top-N view with ``u`` (per topic, +1 each frame) and
``seq`` (per instrument); ``orderbook.1`` sends snapshots only. The ``bybit_u1`` fault re-sends a snapshot
with ``u=1`` (what Bybit does after a service restart: the client must reset its book); ``delta_first`` sends
the next subscription of a book topic a delta before its snapshot; ``gap``/``duplicate_frame``/``reorder_frame``
with ``venue=bybit`` act on the book topics' frames.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from cryptoflow.logs import get_logger
from operators.instruments import is_spot
from simulator.conn import Conn, Sub, text_frame
from simulator.market import Kline, Step, SyntheticMarket
from simulator.side_book import view_diff
from simulator.venue import PriceCache, VenueBase

if TYPE_CHECKING:
    from simulator.engine import Engine

log = get_logger("simulator.bybit")

TOPIC_RE = re.compile(r"^(orderbook\.(1|50|200|500)|publicTrade|tickers|kline\.(1|5|60|D))\.([A-Z0-9]+)$")
KLINE = {"1": "1m", "5": "5m", "60": "1h", "D": "1d"}
KINDS = ("spot", "linear")


@dataclass
class BookTopic:
    depth: int
    u: int = 0
    view: tuple[dict[int, int], dict[int, int]] = field(default_factory=lambda: ({}, {}))
    held: bytes | None = None


class BybitVenue(VenueBase):
    name = "bybit"

    def __init__(self, engine: Engine, speed: float) -> None:
        super().__init__(engine, speed)
        rng = random.Random(engine.seed + 2)
        self.spot = {inst.replace("-", ""): inst for inst in engine.markets if is_spot(inst)}
        self.seq = {inst: rng.randrange(10**10, 10**11) for inst in self.spot.values()}
        self.cache = {inst: PriceCache(engine.specs[inst]) for inst in self.spot.values()}
        self.book_topics: dict[tuple[str, str], BookTopic] = {}
        self.last_ticker: dict[tuple[str, str], int] = {}
        self.delta_first: set[str] = set()  # instruments whose next book subscription gets a delta first
        engine.book_faults["delta_first"] = self._delta_first

    def known(self, kind: str, topic: str) -> bool:
        if (kind, topic) in self.engine.recordings.bybit:
            return True
        match = TOPIC_RE.match(topic)
        if match is None or match.group(4) not in self.spot:
            return False
        return not (kind == "spot" and match.group(2) == "500")

    async def on_text(self, conn: Conn, text: str) -> None:
        kind = conn.path.rsplit("/", 1)[-1]
        try:
            msg = orjson.loads(text)
            op, req_id = msg["op"], msg.get("req_id", "")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            conn.send_text(orjson.dumps({"success": False, "ret_msg": f"error:invalid request {text[:100]}",
                                         "conn_id": conn.conn_id, "op": ""}).decode())
            return
        if op == "ping":
            answer = ({"success": True, "ret_msg": "pong", "conn_id": conn.conn_id, "req_id": req_id, "op": "ping"}
                      if kind == "spot" else
                      {"req_id": req_id, "op": "pong", "args": [str(_now_ms())], "conn_id": conn.conn_id})
            self.pong(conn, text_frame(orjson.dumps(answer).decode()))
            return
        args = msg.get("args") if isinstance(msg.get("args"), list) else []
        if op not in ("subscribe", "unsubscribe") or not args:
            self._ack(conn, op, req_id, False, f"error:unsupported op or empty args, op:{op}")
            return
        bad = [a for a in args if not isinstance(a, str) or not self.known(kind, a)]
        if op == "subscribe" and bad:
            self._ack(conn, op, req_id, False, f"Invalid symbol :[{bad[0]}]")
            return
        self._ack(conn, op, req_id, True, "subscribe" if kind == "spot" and op == "subscribe" else "")
        for topic in args:
            key = (kind, topic)
            if op == "unsubscribe":
                self.detach(conn, key)
                continue
            if key in conn.subs:
                continue
            symbol = topic.rsplit(".", 1)[-1]
            sub = Sub(conn, "bybit", topic.rsplit(".", 1)[0], self.spot.get(symbol, symbol), key)
            self.attach(sub)
            frames = self.engine.recordings.bybit.get(key)
            if frames is not None:
                self.start_replay(sub, frames)
            elif topic.startswith("orderbook."):
                state = self.book_topics.get(key)
                if state is None:
                    state = self.book_topics[key] = BookTopic(depth=int(topic.split(".")[1]))
                    self._view_diff(state, self.engine.markets[sub.inst])
                    state.u = 1
                if sub.inst in self.delta_first:  # the delta_first fault: a stray delta ahead of the snapshot
                    self.delta_first.discard(sub.inst)
                    stray = BookTopic(state.depth, state.u + 1)
                    bid = max(state.view[0], default=0)
                    self.send([sub], self._book_frame(topic, sub.inst, stray, "delta", _now_ms(),
                                                      bids=[(bid, state.view[0].get(bid, 0) + 1)], asks=[]))
                self.send([sub], self._book_frame(topic, sub.inst, state, "snapshot", _now_ms(), full=True))
        conn.flush()

    def _ack(self, conn: Conn, op: str, req_id: str, ok: bool, ret_msg: str) -> None:
        conn.send_text(orjson.dumps({"success": ok, "ret_msg": ret_msg, "conn_id": conn.conn_id, "req_id": req_id,
                                     "op": op}).decode())

    def topic_closed(self, key: Any) -> None:
        self.book_topics.pop(key, None)

    # --- books ----------------------------------------------------------------------------------------------
    def _view_diff(self, state: BookTopic, market: SyntheticMarket) -> tuple[list[tuple[int, int]], ...]:
        old, state.view = state.view, market.view(state.depth)
        return view_diff(old, state.view)

    def _book_frame(self, topic: str, inst: str, state: BookTopic, kind: str, ts_ms: int, *, full: bool = False,
                    bids: list[tuple[int, int]] | None = None, asks: list[tuple[int, int]] | None = None) -> bytes:
        cache = self.cache[inst]
        if full:
            bids = sorted(state.view[0].items(), reverse=True)
            asks = sorted(state.view[1].items())
        b = ",".join(f'["{cache.price(t)}","{cache.size(q)}"]' for t, q in bids or [])
        a = ",".join(f'["{cache.price(t)}","{cache.size(q)}"]' for t, q in asks or [])
        return text_frame(
            f'{{"topic":"{topic}","type":"{kind}","ts":{ts_ms},"data":{{"s":"{topic.rsplit(".", 1)[-1]}",'
            f'"b":[{b}],"a":[{a}],"u":{state.u},"seq":{self.seq[inst]}}},"cts":{ts_ms - 3}}}'
        )

    def on_step(self, inst: str, market: SyntheticMarket, step: Step) -> None:
        if inst not in self.seq:
            return
        self.seq[inst] += len(step.bids) + len(step.asks)
        if inst not in self.active:
            return
        symbol = inst.replace("-", "")
        cache = self.cache[inst]
        if not step.heartbeat:
            faults = self.engine.faults.take("bybit", inst) if self.engine.faults.pending("bybit", inst) else []
            for kind in KINDS:
                for depth in (1, 50, 200, 500):
                    key = (kind, f"orderbook.{depth}.{symbol}")
                    subs = self.topics.get(key)
                    state = self.book_topics.get(key)
                    if subs and state is not None:
                        self._book_step(key[1], inst, market, state, subs, step.ts_ms, faults)
        for kind in KINDS:
            subs = self.topics.get((kind, f"publicTrade.{symbol}"))
            if subs and step.trades:
                rows = ",".join(
                    f'{{"T":{t.ts_ms},"s":"{symbol}","S":"{"Buy" if t.side == "buy" else "Sell"}",'
                    f'"v":"{cache.size(t.lots)}","p":"{cache.price(t.tick)}","L":"ZeroPlusTick","i":"{t.trade_id}",'
                    f'"BT":false,"seq":{t.trade_id}}}' for t in step.trades)
                self.send(subs, text_frame(f'{{"topic":"publicTrade.{symbol}","type":"snapshot","ts":{step.ts_ms},'
                                           f'"data":[{rows}]}}'))
            subs = self.topics.get((kind, f"tickers.{symbol}"))
            if subs and not step.heartbeat and step.ts_ms - self.last_ticker.get((kind, inst), 0) >= 100:
                self.last_ticker[(kind, inst)] = step.ts_ms
                self.send(subs, text_frame(self._ticker(kind, inst, symbol, market, step.ts_ms)))
            if step.trades or step.closed:  # (a hidden trade, trade_gap fault, can close klines)
                for code, interval in KLINE.items():
                    subs = self.topics.get((kind, f"kline.{code}.{symbol}"))
                    if subs:
                        klines = [k for k in step.closed if k.interval == interval] + [market.klines[interval]]
                        candles = [self._candle(code, k, cache, step.ts_ms) for k in klines]
                        self.send(subs, text_frame(orjson.dumps({"topic": f"kline.{code}.{symbol}", "data": candles,
                                                                 "ts": step.ts_ms, "type": "snapshot"}).decode()))

    @staticmethod
    def _candle(code: str, k: Kline, cache: PriceCache, ts_ms: int) -> dict[str, Any]:
        return {"start": k.open_ms, "end": k.close_ms, "interval": code, "open": cache.price(k.open),
                "close": cache.price(k.close), "high": cache.price(k.high), "low": cache.price(k.low),
                "volume": cache.size(k.lots), "turnover": _quote(k.quote, cache), "confirm": k.closed,
                "timestamp": ts_ms}

    def _book_step(self, topic: str, inst: str, market: SyntheticMarket, state: BookTopic, subs: list[Sub],
                   ts_ms: int, faults: list[str]) -> None:
        bids, asks = self._view_diff(state, market)
        if "bybit_u1" in faults:
            state.u = 1
            self.send(subs, self._book_frame(topic, inst, state, "snapshot", ts_ms, full=True))
            return
        if not bids and not asks:
            return
        state.u += 1
        if state.depth == 1:
            frame = self._book_frame(topic, inst, state, "snapshot", ts_ms, full=True)
        else:
            frame = self._book_frame(topic, inst, state, "delta", ts_ms, bids=bids, asks=asks)
        if "drop" in faults:
            return
        if "reorder" in faults:
            state.held = frame
            return
        self.send(subs, frame)
        if "duplicate" in faults:
            self.send(subs, frame)
        if state.held is not None:
            self.send(subs, state.held)
            state.held = None

    def _ticker(self, kind: str, inst: str, symbol: str, market: SyntheticMarket, ts_ms: int) -> str:
        cache = self.cache[inst]
        high, low = market.high_low_24h()
        lots, quote = market.volume_24h()
        last = market.last_trade.tick
        data: dict[str, Any] = {
            "symbol": symbol, "lastPrice": cache.price(last),
            "highPrice24h": cache.price(high), "lowPrice24h": cache.price(low),
            "prevPrice24h": cache.price(market.open_24h),
            "volume24h": cache.size(lots), "turnover24h": _quote(quote, cache),
            "price24hPcnt": f"{(last - market.open_24h) / market.open_24h:.4f}", "usdIndexPrice": cache.price(last),
        }
        if kind == "linear":
            bid, ask = market.bids.best(), market.asks.best()
            data.update(bid1Price=cache.price(bid), bid1Size=cache.size(market.bids.levels[bid]),
                        ask1Price=cache.price(ask), ask1Size=cache.size(market.asks.levels[ask]),
                        markPrice=cache.price(last), indexPrice=cache.price(last))
        return orjson.dumps({"topic": f"tickers.{symbol}", "ts": ts_ms, "type": "snapshot",
                             "cs": self.seq[inst], "data": data}).decode()

    def on_idle(self, inst: str, market: SyntheticMarket) -> None:
        return None

    # --- faults and control ---------------------------------------------------------------------------------
    def malformed(self, inst: str | None) -> int:
        conns = self.conns_of(inst)
        for conn in conns:
            conn.send_text('{"topic":"orderbook.50.' + (inst or "BTC-USDT").replace("-", "") + '","type":"delta","da')
        return len(conns)

    def _delta_first(self, kind: str, inst: str) -> dict[str, Any]:
        self.delta_first.add(inst)
        return {"venue": "bybit"}

    def shutdown_notice(self) -> int:
        return 0  # Bybit sends no notice: the connection just drops

    def book(self, inst: str) -> dict[str, Any]:
        market, cache = self.engine.markets[inst], self.cache[inst]
        symbol = inst.replace("-", "")
        topics = {f"{kind}:{topic}": state.u for (kind, topic), state in self.book_topics.items()
                  if topic.endswith(f".{symbol}")}
        return {
            "u": max(topics.values(), default=0), "seq": self.seq[inst], "topics": topics,
            "bids": [[cache.price(t), cache.size(market.bids.levels[t])] for t in market.bids.top(400)],
            "asks": [[cache.price(t), cache.size(market.asks.levels[t])] for t in market.asks.top(400)],
        }


def _quote(value: float, cache: PriceCache) -> str:
    return f"{value / 10 ** (cache.spec.price_decimals + cache.spec.size_decimals):.4f}"


def _now_ms() -> int:
    return int(time.time() * 1000)
