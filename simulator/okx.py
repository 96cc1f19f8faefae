"""OKX v5 on the simulator: ``/ws/v5/public`` (books, books5, books-l2-tbt, books50-l2-tbt, trades, tickers),
``/ws/v5/business`` (candles), REST ``/api/v5/market/books`` and ``/api/v5/public/instruments``.

Frames are written as OKX writes them (key order included); see ``tests/data`` recordings for the real shape.
Book frames carry ``seqId``/``prevSeqId`` chains and a signed CRC32 ``checksum`` over the top 25 levels
(``--checksum zero`` sends 0 like today's OKX). Unchanged books send heartbeats (empty update, same seqId).
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from cryptoflow.logs import get_logger
from simulator.conn import Conn, Sub, text_frame
from simulator.market import Kline, Step, SyntheticMarket
from simulator.side_book import view_diff
from simulator.venue import PriceCache, VenueBase

if TYPE_CHECKING:
    from simulator.engine import Engine

log = get_logger("simulator.okx")

BOOK_DEPTHS = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
PUBLIC = frozenset({*BOOK_DEPTHS, "books5", "trades", "tickers"})
# OKX candle channel -> simulator kline interval. Up to 4 h OKX candles are UTC-aligned (Hong Kong midnight,
# 16:00 UTC, is a multiple of 4 h); the plain daily candle follows Hong Kong time and ``candle1Dutc`` is the
# UTC day. (OKX has no ``candle4Hutc``: its ``...utc`` channels are 6H/12H/1D and longer.)
CANDLES = {"candle1m": "1m", "candle5m": "5m", "candle1H": "1h", "candle4H": "4h", "candle1D": "1d_hk",
           "candle1Dutc": "1d"}
BUSINESS = frozenset(CANDLES)
NOTICE_64008 = "The connection will soon be closed for a service upgrade. Please reconnect."


def signed_crc32(text: str) -> int:
    crc = zlib.crc32(text.encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass
class OkxBook:
    """Per-instrument OKX state: the seqId chain, what each shallower channel last showed, held frames."""

    seq: int
    prev: int = -1
    views: dict[int, tuple[dict[int, int], dict[int, int]]] = field(default_factory=dict)  # depth -> view
    held: dict[str, bytes] = field(default_factory=dict)  # channel -> frame held back by reorder_frame
    last_ticker_ms: int = 0


class OkxVenue(VenueBase):
    name = "okx"

    def __init__(self, engine: Engine, speed: float, *, checksum: bool, snapshot: bool, idle_timeout: float) -> None:
        super().__init__(engine, speed)
        self.checksum = checksum
        self.snapshot = snapshot
        self.idle_timeout = idle_timeout
        self.rng = random.Random(engine.seed)
        self.books = {inst: OkxBook(seq=self.rng.randrange(10**9, 2 * 10**9)) for inst in engine.markets}
        self.cache = {inst: PriceCache(spec) for inst, spec in engine.specs.items()}
        self.rest_served: dict[str, int] = {}

    def known(self, inst: str) -> bool:
        return inst in self.engine.markets or inst in self.engine.recordings.okx_instruments

    # --- encoding -------------------------------------------------------------------------------------------
    def levels_text(self, inst: str, is_bid: bool, items: list[tuple[int, int]]) -> str:
        cache = self.cache[inst]
        return ",".join(
            f'["{cache.price(t)}","{cache.size(lots)}","0","{(1 + lots % 9) if lots else 0}"]' for t, lots in items
        )

    def _checksum(self, inst: str, market: SyntheticMarket) -> int:
        """Signed CRC32 of the top 25 levels interleaved ``bid:size:ask:size`` (one side alone when the other
        runs out); each level's ``price:size`` text is memoised on the book until that level changes."""
        if not self.checksum:
            return 0
        cache = self.cache[inst]
        texts: list[list[str]] = []
        for side in (market.bids, market.asks):
            memo, ticks = side.memo, side.top(25)
            out = [memo.get(tick) for tick in ticks]
            if None in out:
                for i, tick in enumerate(ticks):
                    if out[i] is None:
                        out[i] = memo[tick] = f"{cache.price(tick)}:{cache.size(side.levels[tick])}"
            texts.append(out)  # type: ignore[arg-type]  # no None left
        bids, asks = texts
        if len(bids) == len(asks):
            parts: list[str] = [""] * (2 * len(bids))
            parts[0::2], parts[1::2] = bids, asks
        else:
            parts = []
            for i in range(max(len(bids), len(asks))):
                parts.extend(side[i] for side in (bids, asks) if i < len(side))
        return signed_crc32(":".join(parts))

    def _book_frame(self, channel: str, inst: str, action: str, asks: str, bids: str, ts_ms: int, checksum: int,
                    prev: int, seq: int) -> bytes:
        return text_frame(
            f'{{"arg":{{"channel":"{channel}","instId":"{inst}"}},"action":"{action}","data":[{{"asks":[{asks}],'
            f'"bids":[{bids}],"ts":"{ts_ms}","checksum":{checksum},"prevSeqId":{prev},"seqId":{seq}}}]}}'
        )

    def _snapshot(self, channel: str, inst: str, market: SyntheticMarket, ts_ms: int) -> bytes:
        depth = BOOK_DEPTHS[channel]
        bids = [(t, market.bids.levels[t]) for t in market.bids.top(depth)]
        asks = [(t, market.asks.levels[t]) for t in market.asks.top(depth)]
        if depth < 400:
            self.books[inst].views[depth] = (dict(bids), dict(asks))
        return self._book_frame(channel, inst, "snapshot", self.levels_text(inst, False, asks),
                                self.levels_text(inst, True, bids), ts_ms, self._checksum(inst, market), -1,
                                self.books[inst].seq)

    def _books5(self, inst: str, market: SyntheticMarket, ts_ms: int) -> bytes | None:
        book = self.books[inst]
        bids = [(t, market.bids.levels[t]) for t in market.bids.top(5)]
        asks = [(t, market.asks.levels[t]) for t in market.asks.top(5)]
        view = (dict(bids), dict(asks))
        if book.views.get(5) == view:
            return None
        book.views[5] = view
        ask_text, bid_text = self.levels_text(inst, False, asks), self.levels_text(inst, True, bids)
        return text_frame(
            f'{{"arg":{{"channel":"books5","instId":"{inst}"}},"data":[{{"asks":[{ask_text}],'
            f'"bids":[{bid_text}],"instId":"{inst}","ts":"{ts_ms}","seqId":{book.seq}}}]}}'
        )

    def _diff(self, inst: str, depth: int, market: SyntheticMarket) -> tuple[list[tuple[int, int]], ...]:
        """Changes of the top-``depth`` view since the last frame of that depth (levels leaving it: size 0)."""
        views = self.books[inst].views
        old, views[depth] = views.get(depth, ({}, {})), market.view(depth)
        return view_diff(old, views[depth])

    # --- the market moved -----------------------------------------------------------------------------------
    def on_step(self, inst: str, market: SyntheticMarket, step: Step) -> None:
        book = self.books[inst]
        book.prev = book.seq
        active = inst in self.active
        faults: list[str] = []
        if not step.heartbeat:
            if active and self.engine.faults.pending("okx", inst):
                faults = self.engine.faults.take("okx", inst)
            book.seq = self.rng.randint(1, max(1, book.seq // 2)) if "seq_reset" in faults else book.seq + \
                self.rng.randint(1, 3)
        if not active:
            return
        full: tuple[str, str] | None = None
        for channel, depth in BOOK_DEPTHS.items():
            subs = self.topics.get((channel, inst))
            if not subs:
                continue
            if depth < 400 and not step.heartbeat:
                bids, asks = self._diff(inst, depth, market)
                head, tail = self._update_text(inst, market, self.levels_text(inst, False, asks),
                                               self.levels_text(inst, True, bids))
            else:
                full = full or self._full_update(inst, market, step)
                head, tail = full
            frame = text_frame(f'{{"arg":{{"channel":"{channel}","instId":"{inst}"}},{head}{step.ts_ms}{tail}'
                               f'{book.prev},"seqId":{book.seq}}}]}}')
            self._send_book(book, channel, subs, frame, faults)
        subs5 = self.topics.get(("books5", inst))
        if subs5 and not step.heartbeat:
            frame5 = self._books5(inst, market, step.ts_ms)
            if frame5 is not None:
                self.send(subs5, frame5)
        trade_subs = self.topics.get(("trades", inst))
        if trade_subs:
            for trade in step.trades:
                self.send(trade_subs, text_frame(
                    f'{{"arg":{{"channel":"trades","instId":"{inst}"}},"data":[{{"instId":"{inst}",'
                    f'"tradeId":"{trade.trade_id}","px":"{self.cache[inst].price(trade.tick)}",'
                    f'"sz":"{self.cache[inst].size(trade.lots)}","side":"{trade.side}","ts":"{trade.ts_ms}",'
                    f'"count":"1"}}]}}'))
        ticker_subs = self.topics.get(("tickers", inst))
        if ticker_subs and not step.heartbeat and step.ts_ms - book.last_ticker_ms >= 100:
            book.last_ticker_ms = step.ts_ms
            self.send(ticker_subs, text_frame(self._ticker(inst, market, step.ts_ms)))
        if step.trades or step.closed:  # (a hidden trade, trade_gap fault, can close klines)
            for channel, interval in CANDLES.items():
                candle_subs = self.topics.get((channel, inst))
                if candle_subs:
                    for kline in (*[k for k in step.closed if k.interval == interval], market.klines[interval]):
                        self.send(candle_subs, text_frame(self._candle(channel, inst, kline)))

    def _update_text(self, inst: str, market: SyntheticMarket, asks: str, bids: str) -> tuple[str, str]:
        """An update frame without its arg, ts and seqIds: ``(text before ts, text between ts and prevSeqId)``."""
        head = f'"action":"update","data":[{{"asks":[{asks}],"bids":[{bids}],"ts":"'
        return head, f'","checksum":{self._checksum(inst, market)},"prevSeqId":'

    def _full_update(self, inst: str, market: SyntheticMarket, step: Step) -> tuple[str, str]:
        """The full-depth (400) update text of a step, kept on the step when it will be served again."""
        memo = step.memo
        if memo is not None and "okx" in memo:
            return memo["okx"]  # type: ignore[no-any-return]
        text = self._update_text(inst, market, self.levels_text(inst, False, sorted(step.asks.items())),
                                 self.levels_text(inst, True, sorted(step.bids.items(), reverse=True)))
        if memo is not None:
            memo["okx"] = text
        return text

    def warm(self, inst: str, market: SyntheticMarket, step: Step) -> None:
        self._full_update(inst, market, step)

    def _send_book(self, book: OkxBook, channel: str, subs: list[Sub], frame: bytes, faults: list[str]) -> None:
        if "drop" in faults:
            log.info("frame_dropped", venue="okx", channel=channel)
            return
        if "reorder" in faults:
            book.held[channel] = frame
            return
        self.send(subs, frame)
        if "duplicate" in faults:
            self.send(subs, frame)
        held = book.held.pop(channel, None)
        if held is not None:
            self.send(subs, held)

    def on_idle(self, inst: str, market: SyntheticMarket) -> None:
        book = self.books[inst]
        for channel in BOOK_DEPTHS:
            subs = self.topics.get((channel, inst))
            if subs:
                self.send(subs, self._book_frame(channel, inst, "update", "", "", now_ms(),
                                                 self._checksum(inst, market), book.seq, book.seq))

    def topic_closed(self, key: Any) -> None:
        channel, inst = key
        if inst in self.books:
            depth = 5 if channel == "books5" else BOOK_DEPTHS.get(channel, 400)
            self.books[inst].views.pop(depth, None)
            self.books[inst].held.pop(channel, None)

    def _ticker(self, inst: str, market: SyntheticMarket, ts_ms: int) -> str:
        cache = self.cache[inst]
        vol_lots, vol_quote = market.volume_24h()
        last = market.last_trade
        bid, ask = market.bids.best(), market.asks.best()
        high, low = market.high_low_24h()
        quote = _fixed_quote(vol_quote, market.spec.price_decimals + market.spec.size_decimals)
        return orjson.dumps({
            "arg": {"channel": "tickers", "instId": inst},
            "data": [{
                "instType": inst_type(inst), "instId": inst, "last": cache.price(last.tick),
                "lastSz": cache.size(last.lots), "askPx": cache.price(ask),
                "askSz": cache.size(market.asks.levels[ask]), "bidPx": cache.price(bid),
                "bidSz": cache.size(market.bids.levels[bid]), "open24h": cache.price(market.open_24h),
                "high24h": cache.price(high), "low24h": cache.price(low), "volCcy24h": quote,
                "vol24h": cache.size(vol_lots), "ts": str(ts_ms), "sodUtc0": cache.price(market.open_24h),
                "sodUtc8": cache.price(market.open_24h),
            }],
        }).decode()

    def _candle(self, channel: str, inst: str, kline: Kline) -> str:
        cache = self.cache[inst]
        quote = _fixed_quote(kline.quote, cache.spec.price_decimals + cache.spec.size_decimals)
        row = [str(kline.open_ms), cache.price(kline.open), cache.price(kline.high), cache.price(kline.low),
               cache.price(kline.close), cache.size(kline.lots), quote, quote, "1" if kline.closed else "0"]
        return orjson.dumps({"arg": {"channel": channel, "instId": inst}, "data": [row]}).decode()

    # --- client messages ------------------------------------------------------------------------------------
    def watchdogs(self, conn: Conn) -> list[Any]:
        return [*super().watchdogs(conn), self._idle_watchdog(conn)]

    async def _idle_watchdog(self, conn: Conn) -> None:
        """OKX closes a connection that has no subscription, or no traffic, for 30 s (``--idle-timeout``)."""
        loop = asyncio.get_running_loop()
        last_sub = last_traffic = loop.time()
        while not conn.closed:
            await asyncio.sleep(self.idle_timeout / 4)
            now = loop.time()
            if conn.subs:
                last_sub = now
            if conn.activity or conn.buffer:
                last_traffic, conn.activity = now, False
            if now - last_sub >= self.idle_timeout or now - last_traffic >= self.idle_timeout:
                log.info("idle_connection_closed", venue="okx", conn=conn.conn_id, subscribed=bool(conn.subs))
                await conn.close(code=4004, message=b"No data received in 30s.")
                return

    async def on_text(self, conn: Conn, text: str) -> None:
        if text == "ping":
            self.pong(conn, text_frame("pong"))
            return
        try:
            msg = orjson.loads(text)
            op, args = msg["op"], msg["args"]
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
                raise ValueError(op)
            args = [{"channel": str(a["channel"]), "instId": str(a["instId"])} for a in args]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._error(conn, "60012", f"Invalid request: {text[:200]}")
            return
        public = conn.path.endswith("/public")
        for arg in args:
            channel, inst = arg["channel"], arg["instId"]
            if channel not in (PUBLIC if public else BUSINESS) or not self.known(inst):
                self._error(conn, "60018", f"Wrong URL or channel:{channel},instId:{inst} doesn't exist. Please use "
                            "the correct URL, channel and parameters referring to API document.")
                continue
            key = (channel, inst)
            answer = orjson.dumps({"event": op, "arg": arg, "connId": conn.conn_id}).decode()
            if op == "unsubscribe":
                self.detach(conn, key)
                conn.send_text(answer)
                continue
            conn.send_text(answer)
            if key in conn.subs:
                continue
            sub = Sub(conn, "okx", channel, inst, key)
            self.attach(sub)
            frames = self.engine.recordings.okx.get(key)
            if frames is not None:
                self.start_replay(sub, frames)
            elif inst in self.engine.markets:
                self._first_frame(sub)
        conn.flush()

    def _first_frame(self, sub: Sub) -> None:
        market = self.engine.markets[sub.inst]
        if sub.channel in BOOK_DEPTHS and self.snapshot:
            self.send([sub], self._snapshot(sub.channel, sub.inst, market, now_ms()))
        elif sub.channel == "books5":
            self.books[sub.inst].views.pop(5, None)
            frame = self._books5(sub.inst, market, now_ms())
            if frame is not None:
                self.send([sub], frame)
        elif sub.channel in BOOK_DEPTHS and BOOK_DEPTHS[sub.channel] < 400:
            self._diff(sub.inst, BOOK_DEPTHS[sub.channel], market)  # no snapshot: start the view silently

    def _error(self, conn: Conn, code: str, msg: str) -> None:
        conn.send_text(orjson.dumps({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}).decode())

    # --- faults ---------------------------------------------------------------------------------------------
    def malformed(self, inst: str | None) -> int:
        conns = self.conns_of(inst)
        for conn in conns:
            broken = f'{{"arg":{{"channel":"books","instId":"{inst or "BTC-USDT"}"}},"action":"update","data":[{{"as'
            conn.send_text(broken)
        return len(conns)

    def shutdown_notice(self) -> int:
        for conn in self.conns:
            conn.send_text(orjson.dumps(
                {"event": "notice", "code": "64008", "msg": NOTICE_64008, "connId": conn.conn_id}).decode())
        return len(self.conns)

    # --- control and REST -----------------------------------------------------------------------------------
    def book(self, inst: str) -> dict[str, Any]:
        market, cache = self.engine.markets[inst], self.cache[inst]
        return {
            "seqId": self.books[inst].seq,
            "bids": [[cache.price(t), cache.size(market.bids.levels[t])] for t in market.bids.top(400)],
            "asks": [[cache.price(t), cache.size(market.asks.levels[t])] for t in market.asks.top(400)],
        }


def inst_type(inst: str) -> str:
    """OKX ``instType`` of an instrument id: SPOT, SWAP, FUTURES or OPTION."""
    parts = inst.split("-")
    if len(parts) == 2:
        return "SPOT"
    if parts[-1] == "SWAP":
        return "SWAP"
    return "OPTION" if len(parts) == 5 else "FUTURES"


def _fixed_quote(value: float, decimals: int) -> str:
    return f"{value / 10**decimals:.4f}"


def now_ms() -> int:
    return int(time.time() * 1000)
