"""One shard of a venue's topics: an asyncio loop in a daemon thread running its connections.

A shard owns the topics whose :func:`shard_of` is its index (every shard computes the same assignment from
the same wanted set, so N shards in any number of workers/processes split the set without talking to
each other; adding or removing a topic never moves another). Inside the shard, topics are packed onto
connections of at most ``per_connection`` topics (first fit; an emptied connection is closed).

The wanted set comes from a :class:`TopicSource` polled every ``source.interval`` seconds; a poll that fails
(``None``) keeps the current set. Everything observable is handed to ``emit`` (a thread-safe
``deque.append``) as :mod:`connectors.ws.events`. The worker thread talks back through the thread-safe
methods :meth:`resubscribe` and :meth:`fetch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from connectors.ws.budget import per_second
from connectors.ws.events import Crashed, Fetched, Rejected, TopicsChecked, WsEvent
from connectors.ws.hooks import VenueHooks
from connectors.ws.session import WsConnection
from cryptoflow.logs import get_logger

log = get_logger("connectors.ws.shard")


def shard_of(topic: str, shards: int) -> int:
    """Stable across processes and runs (never Python's salted ``hash``)."""
    return zlib.crc32(topic.encode()) % shards


class TopicSource(Protocol):
    """Where the wanted topics come from (``connectors.redis.pairs.PairsPoller`` for ``config:trading_pairs``)."""

    interval: float

    async def poll(self) -> frozenset[str] | None:
        """The full wanted set (all shards), or ``None`` when it cannot be read now (keep the current one)."""
        ...

    async def report_rejected(self, topic: str, reason: str) -> None: ...

    async def close(self) -> None: ...


Fetcher = Callable[[str], Awaitable[str]]


class ShardRunner:
    """The I/O side of one Bytewax source partition (see module docstring)."""

    def __init__(
        self,
        *,
        index: int,
        shards: int,
        hooks: VenueHooks,
        source: TopicSource,
        emit: Callable[[WsEvent], None],
        per_connection: int,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        fetcher: Callable[[], Fetcher] | None = None,
    ) -> None:
        self.index = index
        self.shards = shards
        self.hooks = hooks
        self.source = source
        self._emit = emit
        self._full: Callable[[], bool] | None = getattr(emit, "full", None)  # an EventQueue's backpressure
        self.per_connection = max(1, min(per_connection, hooks.limits.topics_per_connection))
        self._backoff = (backoff_initial, backoff_max)
        self._make_fetcher = fetcher
        self._fetch: Fetcher | None = None
        self._background: set[asyncio.Task[None]] = set()
        # The venue's new-connections-per-second budget is shared by all shards of the process.
        self._connect_budget = per_second(hooks.limits.connects_per_second / shards)
        # Stagger the shards: shard i's first connection waits i / rate s, so N shards starting (or all
        # reconnecting) together stay within the venue's per-second budget.
        budget = self._connect_budget
        budget.take(time.monotonic() - budget.window + index / hooks.limits.connects_per_second)
        self._conns: dict[int, WsConnection] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._owner: dict[str, int] = {}
        self._next_conn = index * 1000
        self._loop = asyncio.new_event_loop()
        self._main: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"ws-{hooks.venue}-{index}", daemon=True)
        self._log = log.bind(venue=hooks.venue, shard=index)

    # --- worker-thread API -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        # Cancel from inside the loop: ``_main`` may not exist yet when stop() follows start() at once.
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the thread is ending anyway
                self._loop.call_soon_threadsafe(self._cancel_main)
        self._thread.join(timeout)

    def _cancel_main(self) -> None:
        if self._main is not None:
            self._main.cancel()

    def resubscribe(self, topic: str) -> None:
        """Thread-safe: unsubscribe + subscribe ``topic`` on its connection (a fresh snapshot follows)."""
        self._loop.call_soon_threadsafe(self._resubscribe, topic)

    def fetch(self, topic: str) -> None:
        """Thread-safe: run the fetcher for ``topic``; the result arrives as a ``Fetched`` event."""
        self._loop.call_soon_threadsafe(lambda: self._spawn(self._do_fetch(topic)))

    @property
    def connections(self) -> int:
        # Read from the worker thread while the loop may change the dict: copy first (atomic under the GIL).
        return sum(1 for c in list(self._conns.values()) if c.connected)

    @property
    def reconnects(self) -> int:
        return sum(c.reconnects for c in list(self._conns.values()))

    # --- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._main = self._loop.create_task(self._poll_forever())
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        except Exception as err:
            self._log.exception("ws_shard_crashed")
            self._emit(Crashed(f"{type(err).__name__}: {err}"))
        finally:
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _poll_forever(self) -> None:
        while True:
            wanted = await self.source.poll()
            ts_ms = time.time_ns() // 1_000_000
            if wanted is None:
                self._emit(TopicsChecked(ts_ms, False, tuple(sorted(self._owner))))
            else:
                mine = {t for t in wanted if shard_of(t, self.shards) == self.index}
                added, removed = self._assign(mine)
                self._emit(TopicsChecked(ts_ms, True, tuple(sorted(mine)), added, removed))
            await asyncio.sleep(self.source.interval)

    def _assign(self, mine: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        removed = tuple(sorted(set(self._owner) - mine))
        added = tuple(sorted(mine - set(self._owner)))
        touched: set[int] = set()
        for topic in removed:
            touched.add(self._owner.pop(topic))
        for topic in added:
            conn_id = next((cid for cid, c in self._conns.items()
                            if sum(1 for o in self._owner.values() if o == cid) < self.per_connection), None)
            if conn_id is None:
                conn_id = self._open()
            self._owner[topic] = conn_id
            touched.add(conn_id)
        for conn_id in touched:
            topics = {t for t, o in self._owner.items() if o == conn_id}
            if topics:
                self._conns[conn_id].set_desired(topics)
            else:
                self._close(conn_id)
        if added or removed:
            self._log.info("ws_topics_changed", added=list(added), removed=list(removed),
                           total=len(self._owner), connections=len(self._conns))
        return added, removed

    def _open(self) -> int:
        conn_id = self._next_conn
        self._next_conn += 1
        conn = WsConnection(conn_id, self.hooks, self._on_event, connect_budget=self._connect_budget,
                            backoff_initial=self._backoff[0], backoff_max=self._backoff[1], backlog_full=self._full)
        self._conns[conn_id] = conn
        task = self._loop.create_task(conn.run())
        task.add_done_callback(self._conn_ended)
        self._tasks[conn_id] = task
        return conn_id

    def _conn_ended(self, task: asyncio.Task[None]) -> None:
        """A connection's ``run()`` only returns when closed; an exception it did not classify as retryable is a
        bug: stop the dataflow loudly instead of leaving that connection's topics silently without data."""
        if task.cancelled() or (err := task.exception()) is None:
            return
        self._log.error("ws_connection_crashed", error=f"{type(err).__name__}: {err}", exc_info=err)
        self._emit(Crashed(f"connection task: {type(err).__name__}: {err}"))

    def _close(self, conn_id: int) -> None:
        conn = self._conns.pop(conn_id)
        task = self._tasks.pop(conn_id)
        self._spawn(self._close_conn(conn, task))

    @staticmethod
    async def _close_conn(conn: WsConnection, task: asyncio.Task[None]) -> None:
        await conn.close()
        try:
            await asyncio.wait_for(task, 3.0)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            task.cancel()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled (shutdown), not just the connection task
        except Exception:  # the connection task's own error, already reported by _conn_ended
            pass

    def _on_event(self, event: WsEvent) -> None:
        if isinstance(event, Rejected):
            self._spawn(self.source.report_rejected(event.topic, event.reason))
        self._emit(event)

    def _resubscribe(self, topic: str) -> None:
        conn_id = self._owner.get(topic)
        if conn_id is not None:
            self._conns[conn_id].resubscribe(topic)

    async def _do_fetch(self, topic: str) -> None:
        if self._make_fetcher is None:
            self._emit(Fetched(topic, None, "no fetcher configured", time.time_ns()))
            return
        if self._fetch is None:
            self._fetch = self._make_fetcher()
        try:
            body = await self._fetch(topic)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # any failure of the REST call is reported, the caller decides
            self._emit(Fetched(topic, None, f"{type(err).__name__}: {err}", time.time_ns()))
            return
        self._emit(Fetched(topic, body, None, time.time_ns()))

    async def _shutdown(self) -> None:
        for conn in self._conns.values():
            await conn.close()
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.source.close()
        closer = getattr(self._fetch, "close", None)
        if closer is not None:
            await closer()
