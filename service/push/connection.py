"""One ``/ws`` client: its subscriptions, what waits to be sent to it, and the one task that sends.

Everything a client is sent goes through one writer task (:meth:`Connection.send_loop`), from two places:

* ``out`` — an ordered queue: replies (``result``, ``pong``, errors), snapshots and replays, and the entries of
  event channels (``@trades``, ``@alerts``, ``@my_alerts``) and of ``@depth``. Live entries may fill it to
  ``queue_max``; one more and the client is sent ``SLOW_CONSUMER`` and closed (close code 4103), its queue
  freed (the check is made before a fan-out appends, so a burst the tailer read in one XREAD does not by itself
  close a client that keeps up: ``out`` holds at most ``queue_max`` + one read's entries). A ``@depth`` client
  is closed too, rather than resynced in place: a client that cannot keep up with the updates would not
  keep up after a snapshot either, and ``since`` lets it resume from what it has.
* ``latest`` — state channels (``@depth5|20``, ``@ticker``, ``@kline_*``, ``@analysis``, ``@monitoring``): one
  slot per channel, overwritten by every newer entry, so a client that falls behind gets the newest state
  and never a backlog. ``out`` goes first (a reply never waits behind states).

So a slow client costs at most ``queue_max`` frames plus one XREAD's entries (``tailer.READ_COUNT``) per
channel plus one per state channel, whatever the rate, and never slows others: the tailer only appends to
a deque and the writer is the only one that awaits the socket.

Frames are bytes built once per entry (:mod:`service.push.wire`). Under uvicorn's websockets-sansio protocol,
after each XREAD's fan-out :meth:`Connection.flush` writes all that waits in one ``transport.write`` if the
transport takes more (no task switch); a full transport (its high-water mark plus one write) leaves ``out`` to grow.

Subscribing: register with the tailer first (live entries collect in ``pending``), read the catch-up
(:mod:`service.push.catchup`) and queue it, then move ``pending`` through the same filters; an entry at or
below the catch-up's newest id (``floor``) is dropped, so nothing is sent twice or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from operator import attrgetter

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from cryptoflow.logs import get_logger
from service.push import catchup
from service.push.channels import Channel, StreamId, parse_channel, parse_id
from service.push.entries import Entry
from service.push.owners import with_owners
from service.push.protocol import (
    CLOSE_SLOW_CONSUMER,
    PONG,
    Auth,
    ClientMessage,
    Code,
    Limits,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    error_frame,
    event_frame,
    parse_message,
    result_frame,
)
from service.push.tailer import StreamTailer
from service.push.wire import Direct, direct_writer, frame_of, text_of

log = get_logger("service.push.connection")
Authenticate = Callable[[str], Awaitable[str | None]]  # API key -> user id, None when unknown
_NO_ID: StreamId = (0, 0)
_FRAME = attrgetter("frame")  # read in C
CLOSE_GRACE_S = 30.0  # how long a closed slow client has to read its error and close frames
_MAX_RESYNCS = 3  # depth snapshots in a row that do not chain: give up with an error rather than loop


class Sub:
    __slots__ = ("channel", "event", "floor", "pending", "ready", "resyncs", "seq")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.event = channel.kind == "event"
        self.ready = False
        self.pending: list[Entry] = []
        self.floor: StreamId = _NO_ID
        self.seq: int | None = None  # @depth: the seq of the client's copy (None: take the next update)
        self.resyncs = 0


class Connection:
    def __init__(self, ws: WebSocket, client: object, tailer: StreamTailer, limits: Limits,
                 authenticate: Authenticate) -> None:
        self.ws = ws
        self._client = client  # redis.asyncio.Redis
        self._tailer = tailer
        self._limits = limits
        self._authenticate = authenticate
        self.subs: dict[str, Sub] = {}
        self.out: deque[bytes] = deque()  # WebSocket frames (service.push.wire)
        self.latest: dict[str, bytes] = {}
        self.user: str | None = None
        self.closing: str | None = None
        self.sent = self.writes = 0  # messages; transport writes of the direct path (each one or more messages)
        self.max_queued = 0  # the longest ``out`` has been (tests and the benchmark read it)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self.direct: Direct | None = direct_writer(ws)  # None: not under uvicorn's sansio, ASGI sends

    # ------------------------------------------------------------------------------- from the tailer
    def deliver(self, channel: str, entries: list[Entry]) -> None:
        sub = self.subs.get(channel)
        if sub is None or self.closing:
            return
        out = self.out
        if sub.event and sub.ready and entries[0].sid > sub.floor and len(out) <= self._limits.queue_max:
            out.extend(map(_FRAME, entries))  # an event channel's steady state: live, in order, under the cap
            sub.floor = entries[-1].sid
            self.max_queued = max(self.max_queued, len(out))
            return
        if not sub.ready:
            if len(sub.pending) > self._limits.queue_max:
                self._overflow()
                return
            sub.pending.extend(entries)
            return
        if len(self.out) > self._limits.queue_max and sub.channel.kind != "state":
            self._overflow()  # still more than the cap waiting from before: this client does not keep up
            return
        self._accept(sub, entries)

    def flush(self) -> None:
        """After the tailer's fan-out: write what waits now if the transport takes it, else wake the writer."""
        d = self.direct
        if d is not None and not self.closing and d.ready():
            self._write_pending(d)
        elif self.out or self.latest:
            self._wake.set()

    def _write_pending(self, d: Direct) -> None:
        out, latest = self.out, self.latest
        n = len(out) + len(latest)
        if n:
            if latest:  # out first: a reply never waits behind states
                out.extend(latest.values())
                latest.clear()
            self.sent += n  # counted before the write: whoever reads a message has it in the counts
            self.writes += 1
            d.write(b"".join(out))
            out.clear()

    def _accept(self, sub: Sub, entries: list[Entry]) -> None:
        kind = sub.channel.kind
        if kind == "state":
            last = entries[-1]
            if last.sid > sub.floor:
                sub.floor = last.sid
                self.latest[sub.channel.name] = last.frame
        elif kind == "depth":
            self._accept_depth(sub, entries)
        else:
            floor, out, user = sub.floor, self.out, self.user
            private = kind == "private"
            for e in entries:
                if e.sid > floor and (not private or e.owner == user):
                    out.append(e.frame)
                    floor = e.sid
            sub.floor = floor
        self.max_queued = max(self.max_queued, len(self.out))  # no wake: the tailer calls flush() next

    def _accept_depth(self, sub: Sub, entries: list[Entry]) -> None:
        for e in entries:
            if e.sid <= sub.floor:
                continue
            sub.floor = e.sid
            if e.kind == "snapshot" or sub.seq is None or e.prev_seq == sub.seq:
                sub.seq = e.seq  # a new book, the first entry after a since replay, or the next link
            elif sub.seq < 0 or e.seq <= sub.seq:
                continue  # no book yet (wait for a snapshot entry), or already in the client's snapshot
            else:
                self._resync(sub, e)
                return
            sub.resyncs = 0
            self.out.append(e.frame)

    def _queued(self) -> None:
        n = len(self.out)
        if n > self.max_queued:
            self.max_queued = n
        self._wake.set()

    def _overflow(self) -> None:
        """Too much waits for this client: free it all and close (see the module docstring)."""
        if self.closing:
            return
        self.closing = f"slow consumer: more than {self._limits.queue_max} messages waiting; closing"
        log.warning("push_slow_consumer", queue_max=self._limits.queue_max, subscriptions=len(self.subs))
        self.out.clear()
        self.latest.clear()
        self._detach_all()
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()  # it may be blocked on a socket the client does not read

    # ------------------------------------------------------------------------------------- catch-up
    def _resync(self, sub: Sub, e: Entry) -> None:
        sub.resyncs += 1
        log.info("push_depth_resync", channel=sub.channel.name, seq=sub.seq, prev_seq=e.prev_seq, got=e.seq)
        sub.ready = False
        sub.pending = []
        task = asyncio.create_task(self._catch_up_guarded(sub, None, reset=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up_guarded(self, sub: Sub, since: StreamId | None, *, reset: bool,
                                ack: str | None = None) -> None:
        try:
            if sub.resyncs > _MAX_RESYNCS:
                msg = f"{sub.channel.name}: the book does not chain after {_MAX_RESYNCS} snapshots"
                raise ProtocolError(Code.UNAVAILABLE, msg)
            await self._catch_up(sub, since, reset=reset, ack=ack)
        except (RedisError, OSError, ProtocolError) as err:
            self._drop(sub, err)

    def _drop(self, sub: Sub, err: Exception) -> None:
        if self.subs.get(sub.channel.name) is sub:
            del self.subs[sub.channel.name]
            self._tailer.detach(sub.channel.stream, self)
        if isinstance(err, ProtocolError):
            self._reply(err.frame())
        else:
            self._reply(error_frame(Code.UNAVAILABLE, f"{sub.channel.name}: store unavailable; subscribe again"))

    async def _catch_up(self, sub: Sub, since: StreamId | None, *, reset: bool, ack: str | None) -> None:
        """Read, then queue ``ack`` (the subscribe's ``result``) and what the read found with no await in
        between: the ack marks the moment the subscription starts, so an event written after the client saw
        it is never taken for one before it."""
        ch = sub.channel
        client = self._client
        if since is not None:
            replayed = await catchup.replay(client, ch, since, self._limits.queue_max)  # type: ignore[arg-type]
            if replayed and ch.kind == "private":
                replayed = await with_owners(replayed, self._tailer.owners)
            if replayed is not None:
                if self.subs.get(ch.name) is not sub:
                    return
                if ack:
                    self.out.append(frame_of(ack))
                sub.floor, sub.seq = since, None
                if replayed:
                    self._accept(sub, replayed)
                self._go_live(sub)
                return
            reset = True
        if ch.kind == "depth":
            snap = await catchup.depth_snapshot(client, ch)  # type: ignore[arg-type]
            if self.subs.get(ch.name) is not sub:
                return
            if ack:
                self.out.append(frame_of(ack))
            self.out.append(frame_of(event_frame(ch.name, snap.last_id, snap.data, reset=reset)))
            sub.seq = snap.seq
            # the entries after the one that produced the hash's state chain on from the snapshot; an entry
            # not yet in the stream when the hash was read comes live, and is dropped as contained (seq <= S)
            hit = [i for i, e in enumerate(snap.recent) if e.seq == snap.seq] if snap.seq >= 0 else []
            tail = snap.recent[hit[-1] + 1:] if hit else []
            sub.floor = _NO_ID  # the tail is at or below last_id: let it through, then hold the floor there
            self._accept_depth(sub, tail)
            sub.floor = max(sub.floor, parse_id(snap.last_id))
        else:
            newest = await catchup.newest(client, ch)  # type: ignore[arg-type]
            if self.subs.get(ch.name) is not sub:
                return
            if ack:
                self.out.append(frame_of(ack))
            if newest:
                e = newest[-1]
                sub.floor = e.sid
                if ch.kind == "state":
                    self.out.append(frame_of(event_frame(ch.name, e.id, e.data, reset=True)) if reset else e.frame)
                elif reset:  # an event channel has no state: the marker says "events were missed"
                    self.out.append(frame_of(event_frame(ch.name, e.id, b'{"type":"snapshot"}', reset=True)))
        self._go_live(sub)

    def _go_live(self, sub: Sub) -> None:
        if not sub.ready and self.subs.get(sub.channel.name) is sub:
            sub.ready = True
            pending, sub.pending = sub.pending, []
            if pending:
                self._accept(sub, pending)
        self._queued()

    # -------------------------------------------------------------------------------- client messages
    async def handle(self, msg: ClientMessage) -> None:
        if type(msg) is Ping:
            self._reply(PONG)
        elif type(msg) is Subscribe:
            await self._subscribe(msg)
        elif type(msg) is Unsubscribe:
            ch = parse_channel(msg.channel)
            sub = self.subs.pop(ch.name, None)
            if sub is None:
                raise ProtocolError(Code.NOT_SUBSCRIBED, f"not subscribed to {ch.name}")
            self._tailer.detach(ch.stream, self)
            self.latest.pop(ch.name, None)
            self._reply(result_frame(ch.name))
        elif type(msg) is Auth:
            user = await self._authenticate(msg.token)
            if user is None:
                raise ProtocolError(Code.AUTH_FAILED, "invalid API key")
            self.user = user
            self._reply(result_frame())

    async def _subscribe(self, msg: Subscribe) -> None:
        ch = parse_channel(msg.channel)
        since = parse_id(msg.since) if msg.since is not None else None
        if ch.name in self.subs:
            raise ProtocolError(Code.ALREADY_SUBSCRIBED, f"already subscribed to {ch.name}")
        if len(self.subs) >= self._limits.max_subscriptions:
            msg_ = f"at most {self._limits.max_subscriptions} subscriptions per connection"
            raise ProtocolError(Code.TOO_MANY_SUBSCRIPTIONS, msg_)
        if ch.kind == "private" and self.user is None:
            raise ProtocolError(Code.AUTH_REQUIRED, f"{ch.name} needs {{\"op\":\"auth\",\"token\":...}} first")
        sub = Sub(ch)
        self.subs[ch.name] = sub
        try:
            await self._tailer.attach(ch.stream, self)
        except (RedisError, OSError) as err:
            self._drop(sub, err)
            return
        await self._catch_up_guarded(sub, since, reset=False, ack=result_frame(ch.name))

    def _reply(self, frame: str) -> None:
        if self.closing:
            return
        if len(self.out) > self._limits.queue_max:
            self._overflow()  # a client that sends pings and reads nothing is as slow as any
            return
        self.out.append(frame_of(frame))
        self._queued()

    # ---------------------------------------------------------------------------------- the socket
    async def send_loop(self) -> None:
        out, latest, ws, d = self.out, self.latest, self.ws, self.direct
        while not self.closing:
            await self._wake.wait()
            self._wake.clear()
            while (out or latest) and not self.closing:
                if d is None:  # another ASGI server: one websocket.send per message
                    frame = out.popleft() if out else latest.pop(next(iter(latest)))
                    await ws.send_text(text_of(frame))
                    self.sent += 1
                elif not d.writable.is_set():
                    await d.writable.wait()  # the transport's buffer is full: out grows meanwhile
                elif not d.open():
                    return  # the peer left or a close is on its way: the receive loop ends the connection
                else:
                    self._write_pending(d)

    async def receive_loop(self) -> None:
        ws = self.ws
        max_bytes = self._limits.max_bytes
        while not self.closing:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                await self.handle(parse_message(raw, max_bytes))
            except ProtocolError as err:
                self._reply(err.frame())

    async def run(self) -> None:
        """Until the client leaves or is closed as a slow consumer."""
        sender = self._sender = asyncio.create_task(self.send_loop())
        receiver = asyncio.create_task(self.receive_loop())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver, *self._tasks):
                task.cancel()
            for task in (sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                    await task
            self._detach_all()
        if self.closing:
            await self._close_slow()

    async def _close_slow(self) -> None:
        reason = self.closing or ""
        # The error frame, then a close frame with the same code, queued behind what the socket already
        # holds; a client that does not read them within the grace is dropped. Its queue is freed already:
        # waiting costs one connection object and the transport's bounded buffer.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.ws.send_text(error_frame(Code.SLOW_CONSUMER, reason))
                await self.ws.close(CLOSE_SLOW_CONSUMER, reason[:120])

    def _detach_all(self) -> None:
        for sub in self.subs.values():
            self._tailer.detach(sub.channel.stream, self)
        self.subs.clear()
