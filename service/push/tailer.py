"""One XREAD loop per gateway process: it tails the streams its clients need and fans entries out.

Every connection that subscribes to a channel registers here; the first one for a stream adds the stream to
the loop's XREAD (from the stream's newest id at that moment), the last one to leave removes it. One
blocking ``XREAD BLOCK ... COUNT ...`` on a dedicated connection serves every stream of the process, so the
Redis load grows with the number of channels in use, not with clients, and any number of gateway processes
can tail the same streams (reads do not consume: unlike a consumer group, nobody acknowledges anything, and
a dataflow never knows who reads). A new stream interrupts a blocked XREAD with ``CLIENT UNBLOCK`` so its
first events are not held for the block timeout.

Redis unreachable: the loop logs once, retries with capped backoff and carries on from the ids it had, so
clients miss nothing that is still in the streams when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.redis.push_streams import MY_ALERTS, STREAM_PREFIX
from cryptoflow.logs import get_logger
from service.push.entries import Entry, parse_entries
from service.push.owners import OwnerLookup, no_owners, with_owners

log = get_logger("service.push.tailer")
READ_COUNT = 1000  # entries per stream per XREAD: bounds one fan-out's work
BLOCK_MS = 1000
_RETRY_MAX_S = 5.0


class Listener(Protocol):
    def deliver(self, channel: str, entries: list[Entry]) -> None: ...

    def flush(self) -> None: ...


class StreamTailer:
    def __init__(self, client: aioredis.Redis, reader: aioredis.Redis, *, block_ms: int = BLOCK_MS,
                 count: int = READ_COUNT, owners: OwnerLookup = no_owners) -> None:
        self.owners = owners  # @my_alerts: alert id -> owner, looked up once per batch before the fan-out
        self._client = client  # shared: CLIENT UNBLOCK, the newest id of a new stream
        self._reader = reader  # single connection: the blocking XREAD, so it can be unblocked by id
        self._block_ms = block_ms
        self._count = count
        self._pos: dict[str, bytes] = {}  # stream -> last id read
        self._listeners: dict[str, dict[int, Listener]] = {}
        self._changed = asyncio.Event()
        self._reader_id: int | None = None
        self._blocked = False
        self._task: asyncio.Task[None] | None = None
        self.entries_read = 0

    async def attach(self, stream: str, listener: Listener) -> None:
        """Fan ``stream`` out to ``listener`` from now on. Entries written before this call returns may or may
        not be delivered; the caller's catch-up read covers them (and drops the ones it already sent)."""
        subs = self._listeners.get(stream)
        if subs is None:
            newest: Any = await self._client.xrevrange(stream, count=1)
            subs = self._listeners.setdefault(stream, {})
            self._pos.setdefault(stream, newest[0][0] if newest else b"0-0")
            await self._wake()
        subs[id(listener)] = listener
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="push-tailer")

    def detach(self, stream: str, listener: Listener) -> None:
        subs = self._listeners.get(stream)
        if subs is None:
            return
        subs.pop(id(listener), None)
        if not subs:
            del self._listeners[stream]
            self._pos.pop(stream, None)

    @property
    def streams(self) -> int:
        return len(self._pos)

    async def _wake(self) -> None:
        self._changed.set()
        if self._blocked and self._reader_id is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.client_unblock(self._reader_id)

    async def _run(self) -> None:
        delay, failing = 0.1, False
        while True:
            if not self._pos:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                if self._reader_id is None:
                    self._reader_id = int(await self._reader.client_id())
                if not self._pos:
                    continue  # the last stream left during that await
                self._changed.clear()
                self._blocked = True
                try:
                    streams: Any = dict(self._pos)
                    resp: Any = await self._reader.xread(streams, count=self._count, block=self._block_ms)
                finally:
                    self._blocked = False
            except (RedisError, OSError) as err:
                self._reader_id = None
                if not failing:
                    log.warning("push_tail_failed", error=str(err), action="retrying until Redis is back")
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if failing:
                log.warning("push_tail_recovered")
                failing, delay = False, 0.1
            touched: dict[int, Listener] = {}
            for raw_stream, rows in resp or ():
                stream = raw_stream.decode()
                if stream not in self._pos or not rows:
                    continue  # detached while the read was in flight
                self._pos[stream] = rows[-1][0]
                channel = stream[len(STREAM_PREFIX):]
                entries = parse_entries(channel, rows)
                if not entries:
                    continue  # nothing but deleted entries: a listener's filters assume at least one
                self.entries_read += len(entries)
                if channel == MY_ALERTS:
                    entries = await with_owners(entries, self.owners)
                for key, listener in list(self._listeners.get(stream, {}).items()):
                    listener.deliver(channel, entries)
                    touched[key] = listener
            for listener in touched.values():  # one write per client for everything this read gave it
                listener.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
