"""One WebSocket connection that lives forever: connect, keep alive, follow a wanted topic set, reconnect.

:class:`WsConnection` is venue-neutral; a :class:`~connectors.ws.hooks.VenueHooks` object supplies the
venue's messages, answers, keep-alive style and budgets. Behaviour:

* **Subscriptions follow ``desired``** (set with :meth:`set_desired`): only the difference is sent, unsubscribes
  first; every request waits for the venue's answer (``Limits.answer_timeout``). A refused or unanswered
  subscribe is retried alone up to ``Limits.max_retries`` times, then the topic is reported ``Rejected`` and
  left alone until it leaves ``desired``. Requests respect the per-second and per-hour budgets.
* **Keep-alive and watchdog** per :class:`~connectors.ws.hooks.KeepAlive`: a ping after ``interval`` s of
  silence (or every ``interval`` s); no pong within ``pong_timeout`` -> reconnect (a silent feed is caught
  by the idle ping going unanswered).
* **Reconnect forever** with capped, jittered exponential backoff, reset after a connection that stayed up
  ``healthy_after`` seconds; a shutdown notice or the venue's maximum connection age reconnects at once. After
  a reconnect the current ``desired`` set is subscribed again (answers are fresh snapshots).
* ``asyncio.CancelledError`` is always re-raised; :meth:`close` ends the connection for good.
* **Hostile frames never end the task**: a frame over ``max_frame_bytes`` (default :data:`MAX_WS_FRAME_BYTES`)
  is refused by websockets (close 1009) -> a normal reconnect with backoff (a venue that keeps sending one
  backs off to ``backoff_max``, never a crash loop), reported as ``Disconnected(rejected="too_large")`` for the
  processor to count; frames under it reach the parser, which rejects those over
  :data:`connectors.untrusted.MAX_FRAME_BYTES` unread. ``hooks.classify`` (run here, on the I/O thread)
  decodes only through :func:`connectors.untrusted.decode`, so no frame content can make it raise
  (``tests/test_untrusted.py``); an exception it still raises is a bug and stops the dataflow loudly.

Everything observable goes through ``emit`` (see ``connectors/ws/events.py``), in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from connectors.untrusted import MAX_FRAME_BYTES
from connectors.ws.budget import Backoff, Budget, per_second
from connectors.ws.events import (
    Connected,
    Disconnected,
    Frame,
    Rejected,
    Subscribed,
    Unsubscribed,
    WsEvent,
)
from connectors.ws.hooks import Ack, KeepAliveMode, Notice, Op, Pong, Reject, Request, VenueHooks
from cryptoflow.logs import get_logger

log = get_logger("connectors.ws")
Emit = Callable[[WsEvent], None]
_req_ids = itertools.count(1)  # process-wide, so answers can never be confused between reconnects
# websockets' own frame limit (its default, 1 MiB, would drop a connection for a big legit snapshot). Frames
# between untrusted.MAX_FRAME_BYTES and this are read and rejected by the parser (counted, no reconnect).
MAX_WS_FRAME_BYTES = 4 * MAX_FRAME_BYTES
CLOSE_TOO_BIG = 1009


class _Reconnect(Exception):  # control flow, not an error
    def __init__(self, reason: str, *, immediate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.immediate = immediate


@dataclass(slots=True)
class _Pending:
    op: Op
    remaining: set[str]
    deadline: float
    req_id: str | None
    sent_at: float = field(default_factory=time.monotonic)


class WsConnection:
    """A self-healing connection for a changing set of topics (see module docstring)."""

    def __init__(
        self,
        conn_id: int,
        hooks: VenueHooks,
        emit: Emit,
        *,
        connect_budget: Budget,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 10.0,
        max_frame_bytes: int = MAX_WS_FRAME_BYTES,
        backlog_full: Callable[[], bool] | None = None,
    ) -> None:
        self.conn_id = conn_id
        self._backlog_full = backlog_full  # true while the worker is behind: stop reading (EventQueue)
        self._max_frame_bytes = max_frame_bytes
        self.hooks = hooks
        self._emit = emit
        self._connect_budget = connect_budget
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._healthy_after = healthy_after
        self.desired: set[str] = set()
        self.subscribed: set[str] = set()
        self.rejected: set[str] = set()
        self.reconnects = 0
        self._attempts: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        self._pending_topic: dict[str, str] = {}
        self._force_unsub: set[str] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._ws: ClientConnection | None = None
        self._last_rx = time.monotonic()
        self._last_pong = 0.0
        self._control_budget = per_second(hooks.limits.control_per_second)
        per_hour = hooks.limits.requests_per_hour
        self._hour_budget = Budget(per_hour, 3600.0) if per_hour else None
        self._hour_warned = False
        self._log = log.bind(venue=hooks.venue, conn=conn_id)

    # --- called from the loop (by the shard) -------------------------------------------------------------
    def set_desired(self, topics: set[str]) -> None:
        self.desired = set(topics)
        self.rejected &= self.desired
        for gone in set(self._attempts) - self.desired:
            del self._attempts[gone]
        self._wake.set()

    def resubscribe(self, topic: str) -> None:
        """Unsubscribe and subscribe ``topic`` again (the venue answers with a fresh snapshot)."""
        if topic in self.subscribed:
            self._force_unsub.add(topic)
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    # --- the forever loop ---------------------------------------------------------------------------------
    async def run(self) -> None:
        while not self._closing:
            while (wait := self._connect_budget.wait_time(time.monotonic())) > 0:
                await asyncio.sleep(wait)
            self._connect_budget.take(time.monotonic())
            started = time.monotonic()
            immediate, reason, rejected = False, "closed", ""
            try:
                async with connect(
                    self.hooks.url(), ping_interval=None, max_size=self._max_frame_bytes, open_timeout=10,
                    close_timeout=2,
                ) as ws:
                    self._ws = ws
                    self._last_rx = time.monotonic()
                    self._emit(Connected(self.conn_id))
                    self._log.info("ws_connected", url=self.hooks.url(), topics=len(self.desired))
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except _Reconnect as err:
                immediate, reason = err.immediate, err.reason
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as err:
                reason = f"{type(err).__name__}: {err}"
                sent = getattr(err, "sent", None)
                if sent is not None and sent.code == CLOSE_TOO_BIG:
                    rejected = "too_large"
                    self._log.warning("ws_frame_too_large", limit_bytes=self._max_frame_bytes, reason=reason)
            finally:
                was_up = self._ws is not None
                self._ws = None
                lost = tuple(sorted(self.desired | self.subscribed))
                self.subscribed.clear()
                self._pending.clear()
                self._pending_topic.clear()
                self._force_unsub.clear()
                if was_up:
                    self._emit(Disconnected(self.conn_id, reason, lost, planned=self._closing, rejected=rejected))
            if self._closing:
                return
            self.reconnects += 1
            if time.monotonic() - started >= self._healthy_after:
                self._backoff.reset()
            delay = 0.0 if immediate else self._backoff.next_delay()
            self._log.warning("ws_reconnecting", reason=reason, delay_s=round(delay, 3),
                              attempt=self._backoff.attempt)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        reader = asyncio.create_task(self._read(ws))
        control = asyncio.create_task(self._control(ws))
        try:
            done, _ = await asyncio.wait({reader, control}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (reader, control):
                task.cancel()
            await asyncio.gather(reader, control, return_exceptions=True)

    async def _wait_for_worker(self, full: Callable[[], bool]) -> None:
        """Backpressure: the socket is not read while the shard's backlog is full (see EventQueue)."""
        self._log.warning("ws_backpressure", state="paused")
        paused = time.monotonic()
        while full():
            await asyncio.sleep(0.01)
        self._log.info("ws_backpressure", state="resumed", paused_s=round(time.monotonic() - paused, 3))

    async def _read(self, ws: ClientConnection) -> None:
        classify = self.hooks.classify
        emit = self._emit
        conn = self.conn_id
        full = self._backlog_full
        async for msg in ws:
            if full is not None and full():
                await self._wait_for_worker(full)
            recv_ns = time.time_ns()
            self._last_rx = time.monotonic()
            text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
            ctl = classify(text)
            if ctl is None:
                emit(Frame(text, recv_ns, conn))
            elif isinstance(ctl, Ack):
                self._on_ack(ctl)
            elif isinstance(ctl, Reject):
                self._on_reject(ctl)
            elif isinstance(ctl, Pong):
                self._last_pong = self._last_rx
            elif isinstance(ctl, Notice):
                if ctl.reconnect:
                    self._log.warning("ws_notice", reason=ctl.reason, reconnect=True)
                    why = f"notice: {ctl.reason}"
                    raise _Reconnect(why, immediate=True)
                self._log.info("ws_notice", reason=ctl.reason, reconnect=False)
        why = f"closed by server (code {ws.close_code})"
        raise _Reconnect(why)

    async def _control(self, ws: ClientConnection) -> None:
        ka = self.hooks.keepalive
        max_age = self.hooks.limits.max_age
        opened = last_ping = time.monotonic()
        ping_at: float | None = None
        pong_waiter: Any = None
        while True:
            now = time.monotonic()
            if ping_at is not None:
                answered = self._last_pong > ping_at or (pong_waiter is not None and pong_waiter.done())
                if answered:
                    ping_at, pong_waiter = None, None
                elif now - ping_at > ka.pong_timeout:
                    why = f"no pong within {ka.pong_timeout} s"
                    raise _Reconnect(why)
            if ping_at is None:
                if ka.mode is KeepAliveMode.TEXT_INTERVAL:
                    due = now - last_ping >= ka.interval
                else:
                    due = now - self._last_rx >= ka.interval
                if due:
                    if ka.mode is KeepAliveMode.PROTOCOL_IDLE:
                        pong_waiter = await ws.ping()
                    else:
                        await ws.send(ka.ping_text)
                    ping_at = last_ping = now
            if max_age is not None and now - opened >= max_age:
                why = f"connection older than {max_age} s"
                raise _Reconnect(why, immediate=True)
            for key, pend in list(self._pending.items()):
                if now >= pend.deadline:
                    self._fail(key, tuple(pend.remaining), f"no answer within {self.hooks.limits.answer_timeout} s")
            await self._sync(ws)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)

    # --- subscription diffing -----------------------------------------------------------------------------
    async def _sync(self, ws: ClientConnection) -> None:
        busy = self._pending_topic.keys()
        unsub = ((self.subscribed - self.desired) | (self._force_unsub & self.subscribed)) - busy
        sub = self.desired - self.subscribed - self.rejected - busy
        batches: list[tuple[Op, list[str]]] = []
        if unsub:
            batches.append(("unsubscribe", sorted(unsub)))
        fresh = sorted(t for t in sub if not self._attempts.get(t))
        if fresh:
            batches.append(("subscribe", fresh))
        batches.extend(("subscribe", [t]) for t in sorted(sub) if self._attempts.get(t))  # retries go alone
        for op, topics in batches:
            for req in self.hooks.requests(op, topics, next(_req_ids)):
                if not await self._send(ws, req):
                    return

    async def _send(self, ws: ClientConnection, req: Request) -> bool:
        now = time.monotonic()
        if self._hour_budget is not None and self._hour_budget.wait_time(now) > 0:
            if not self._hour_warned:
                self._hour_warned = True
                self._log.warning("ws_request_budget_exhausted", per_hour=self._hour_budget.limit,
                                  retry_in_s=round(self._hour_budget.wait_time(now), 1))
            return False
        if not self._control_budget.take(now):
            return False
        if self._hour_budget is not None:
            self._hour_budget.take(now)
            self._hour_warned = False
        key = req.req_id or f"auto-{next(_req_ids)}"
        self._pending[key] = _Pending(req.op, set(req.topics), now + self.hooks.limits.answer_timeout,
                                      req.req_id)
        for topic in req.topics:
            self._pending_topic[topic] = key
            if req.op == "unsubscribe":
                self._force_unsub.discard(topic)
        await ws.send(req.text)
        return True

    def _done(self, topic: str) -> None:
        key = self._pending_topic.pop(topic, None)
        if key is not None and key in self._pending:
            pend = self._pending[key]
            pend.remaining.discard(topic)
            if not pend.remaining:
                del self._pending[key]

    def _on_ack(self, ack: Ack) -> None:
        topics = ack.topics
        key = ack.req_id if ack.req_id in self._pending else None
        if key is None and topics:
            key = self._pending_topic.get(topics[0])
        pend = self._pending.get(key) if key is not None else None
        if not topics and pend is not None:
            topics = tuple(pend.remaining)
        op = ack.op or (pend.op if pend is not None else "subscribe")  # an answer that does not say: the request's
        for topic in topics:
            self._done(topic)
            if op == "subscribe":
                self._attempts.pop(topic, None)
                if topic not in self.subscribed:
                    self.subscribed.add(topic)
                    self._emit(Subscribed(self.conn_id, topic))
            elif topic in self.subscribed:
                self.subscribed.discard(topic)
                self._emit(Unsubscribed(self.conn_id, topic))
        self._wake.set()

    def _on_reject(self, rej: Reject) -> None:
        key = rej.req_id if rej.req_id in self._pending else None
        if key is None and rej.topics:
            key = self._pending_topic.get(rej.topics[0])
        if key is None and self._pending:
            key = next(iter(self._pending))  # answers come in order: the oldest request still waiting
        if key is None:
            self._log.warning("ws_unmatched_reject", reason=rej.reason)
            return
        self._fail(key, rej.topics or tuple(self._pending[key].remaining), rej.reason)

    def _fail(self, key: str, topics: tuple[str, ...], reason: str) -> None:
        pend = self._pending.get(key)
        op = pend.op if pend is not None else "subscribe"
        for topic in topics:
            self._done(topic)
            if op == "unsubscribe":  # the venue does not have it: it is not subscribed any more
                if topic in self.subscribed:
                    self.subscribed.discard(topic)
                    self._emit(Unsubscribed(self.conn_id, topic))
                continue
            tries = self._attempts.get(topic, 0) + 1
            self._attempts[topic] = tries
            if tries > self.hooks.limits.max_retries:
                self.rejected.add(topic)
                self._log.warning("ws_topic_rejected", topic=topic, reason=reason, attempts=tries)
                self._emit(Rejected(topic, reason))
            else:
                self._log.info("ws_subscribe_retry", topic=topic, reason=reason, attempt=tries)
        self._wake.set()
