"""What the three venues share: the WebSocket session loop, topic -> subscriptions bookkeeping, pongs
(with the pong faults), refusals, replay subscriptions and the per-instrument exact-string caches."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from cryptoflow.logs import get_logger
from simulator.conn import Conn, Sub, ws_frame
from simulator.instrument import InstrumentSpec
from simulator.replay import Frames, replay_to

if TYPE_CHECKING:
    from simulator.engine import Engine

log = get_logger("simulator.venue")


class PriceCache:
    """Exact strings of one instrument's prices (ticks) and sizes (lots), memoised for the hot path."""

    def __init__(self, spec: InstrumentSpec, eight_decimals: bool = False) -> None:
        self.spec = spec
        self.eight = eight_decimals
        self._prices: dict[int, str] = {}

    def price(self, tick: int) -> str:
        text = self._prices.get(tick)
        if text is None:
            if len(self._prices) > 200_000:
                self._prices.clear()
            text = self._fmt(tick, self.spec.price_decimals)
            self._prices[tick] = text
        return text

    def size(self, lots: int) -> str:
        if lots == 0 and not self.eight:
            return "0"  # OKX and Bybit remove a level with size "0"; Binance writes "0.00000000"
        return self._fmt(lots, self.spec.size_decimals)

    def _fmt(self, value: int, decimals: int) -> str:
        if self.eight:
            value, decimals = (value * 10 ** (8 - decimals), 8) if decimals <= 8 else (value, decimals)
        if decimals == 0:
            return str(value)
        whole, frac = divmod(value, 10**decimals)
        return f"{whole}.{frac:0{decimals}d}"


class VenueBase:
    name = "venue"
    #: answer WebSocket ping frames (and send none); Binance overrides to send server pings
    server_ping_interval: float | None = None

    def __init__(self, engine: Engine, speed: float) -> None:
        self.engine = engine
        self.speed = speed
        self.conns: set[Conn] = set()
        self.topics: dict[Any, list[Sub]] = defaultdict(list)
        self.active: Counter[str] = Counter()  # instrument -> open subscriptions (idle instruments cost nothing)

    # --- session ----------------------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.StreamResponse:
        if self.engine.faults.refusing():
            log.info("connection_refused", venue=self.name, path=request.path)
            return web.Response(status=503, text="Service Unavailable: the venue refuses connections for now")
        ws = web.WebSocketResponse(compress=False, autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Conn(self.name, request.path, ws, request)
        self.conns.add(conn)
        log.info("connection_opened", venue=self.name, conn=conn.conn_id, path=request.path)
        watchdogs = [asyncio.create_task(w) for w in self.watchdogs(conn)]
        try:
            await self.on_open(conn)
            async for msg in ws:
                conn.activity = True
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    self.pong(conn, ws_frame(msg.data, opcode=0xA))
                elif msg.type == WSMsgType.PONG:
                    conn.pongs += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for task in watchdogs:
                task.cancel()
            self.drop_conn(conn)
            log.info("connection_closed", venue=self.name, conn=conn.conn_id)
        return ws

    def watchdogs(self, conn: Conn) -> list[Any]:
        out: list[Any] = []
        if self.server_ping_interval:
            out.append(self._server_pings(conn, self.server_ping_interval))
        return out

    async def _server_pings(self, conn: Conn, interval: float) -> None:
        while not conn.closed:
            await asyncio.sleep(interval)
            conn.write(ws_frame(b"sim", opcode=0x9))
            conn.flush()

    async def on_open(self, conn: Conn) -> None:
        return None

    async def on_text(self, conn: Conn, text: str) -> None:
        raise NotImplementedError

    def drop_conn(self, conn: Conn) -> None:
        conn.closed = True
        conn.cancel_tasks()
        for sub in conn.subs.values():
            self._detach(sub)
        conn.subs.clear()
        self.conns.discard(conn)

    # --- subscriptions ----------------------------------------------------------------------------------
    def attach(self, sub: Sub) -> None:
        sub.conn.subs[sub.key] = sub
        self.topics[sub.key].append(sub)
        self.active[sub.inst] += 1

    def detach(self, conn: Conn, key: Any) -> Sub | None:
        sub = conn.subs.pop(key, None)
        if sub is not None:
            if sub.task is not None:
                sub.task.cancel()
            self._detach(sub)
        return sub

    def _detach(self, sub: Sub) -> None:
        subs = self.topics.get(sub.key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            self.active[sub.inst] -= 1
            if self.active[sub.inst] <= 0:
                del self.active[sub.inst]
            if not subs:
                del self.topics[sub.key]
                self.topic_closed(sub.key)

    def topic_closed(self, key: Any) -> None:
        """Hook: forget the per-topic state of a topic nobody subscribes to any more."""

    def start_replay(self, sub: Sub, frames: Frames, transform: Callable[[str], str] | None = None) -> None:
        sub.replay = True
        def finished() -> None:
            self.engine.replays_finished += 1

        sub.task = asyncio.create_task(replay_to(sub, frames, self.speed, transform, finished))

    @staticmethod
    def send(subs: list[Sub], frame: bytes) -> None:
        for sub in subs:
            sub.conn.write(frame)
            sub.frames += 1

    # --- keep-alive -------------------------------------------------------------------------------------
    def pong(self, conn: Conn, frame: bytes) -> None:
        """Answer a ping with ``frame`` now, later (``pong_delay``) or never (``no_pong``)."""
        delay = self.engine.faults.pong(self.name)
        if delay is None:
            log.info("pong_withheld", venue=self.name, conn=conn.conn_id)
            return
        if delay <= 0:
            conn.write(frame)
            conn.flush()
            return

        def later() -> None:
            if not conn.closed:
                conn.write(frame)
                conn.flush()

        asyncio.get_running_loop().call_later(delay, later)

    def conns_of(self, inst: str | None) -> list[Conn]:
        if inst is None:
            return list(self.conns)
        return [c for c in self.conns if any(s.inst == inst for s in c.subs.values())]

    def raw(self, inst: str | None, text: str, count: int = 1) -> int:
        """The ``raw`` fault: ``text`` as ``count`` text frames on every connection (subscribed to ``inst``)."""
        conns = self.conns_of(inst)
        for conn in conns:
            for _ in range(count):
                conn.send_text(text)
        return len(conns)
