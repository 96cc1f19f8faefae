"""The reliable Redis list: its elements, where they are held, and their acknowledgement.

The consumer is :class:`connectors.redis.list_source.ReliableRedisListSource` (its docstring describes the
processing lists, the two acknowledgement modes, delivery counting and dead-lettering). Here: the element as
delivered (:class:`ListItem`), the keys derived from a list key, and, for ``explicit`` mode, removing finished
elements from their processing list (:class:`ListAcker`, :class:`AckSink`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.client import Pipeline

from connectors.redis.client import sync_client


class AckMode(StrEnum):
    EXPLICIT = "explicit"
    RECOVERY = "recovery"


class ListItem(msgspec.Struct, frozen=True):
    """One element of the list as stored (bytes), with where it is held until acknowledged."""

    raw: bytes
    partition: str
    offset: int | None = None  # recovery mode: position in the partition's stream; explicit mode: None


def processing_key(key: str, partition: str) -> str:
    return f"{key}:processing:{partition}"


def offset_key(key: str, partition: str) -> str:
    return f"{key}:processing:{partition}:offset"


def deliveries_key(key: str, partition: str) -> str:
    return f"{key}:processing:{partition}:deliveries"


def dead_key(key: str) -> str:
    return f"{key}:dead"


DEFAULT_MAX_DELIVERIES = 5


def list_client(url: str, *, socket_timeout: float = 5.0, retries: int = 0) -> redis.Redis:
    """A bytes client (plain or Sentinel URL), by default without automatic retries: the source's ``next_batch``
    must not sleep in redis-py's backoff (it backs off itself), and a move whose reply was lost is recovered
    from the processing list rather than sent again."""
    return sync_client(url, retries=retries, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)


# KEYS: processing list, destination. ARGV: the held element, the element to push. Pushes only if the held
# element was still there, so a call repeated after a lost reply (the caller retries on a connection error)
# neither duplicates the element nor resurrects it.
_SWAP = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


# KEYS: processing list, source list. ARGV: the held element. Gives it back to the source list's consuming end.
_RELEASE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


class ListAcker:
    """Removes finished elements from their processing list (explicit mode)."""

    def __init__(self, redis_url: str, key: str, client: redis.Redis | None = None) -> None:
        self.key = key
        self._client = client or list_client(redis_url)
        self._swap = self._client.register_script(_SWAP)
        self._release = self._client.register_script(_RELEASE)

    def ack_in(self, pipe: Pipeline, item: ListItem) -> None:
        """Queue the removal on ``pipe`` (put it in the same MULTI as the work's own writes)."""
        pipe.lrem(processing_key(self.key, item.partition), 1, item.raw)  # type: ignore[arg-type]

    def ack(self, items: Iterable[ListItem]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            self.ack_in(pipe, item)
        if len(pipe):
            pipe.execute()

    def replace(self, item: ListItem, raw: bytes) -> ListItem:
        """Swap the held element for an updated one (e.g. a retry counter), atomically; returns the new item.
        Safe to repeat after a lost reply (the swap happens once)."""
        proc = processing_key(self.key, item.partition)
        self._swap(keys=[proc, proc], args=[item.raw, raw])
        return ListItem(raw, item.partition)

    def move_to(self, item: ListItem, dest: str, raw: bytes | None = None) -> None:
        """Atomically take the element out of processing and LPUSH it (or ``raw``) onto ``dest``. Safe to
        repeat after a lost reply (the move happens once)."""
        self._swap(keys=[processing_key(self.key, item.partition), dest],
                   args=[item.raw, item.raw if raw is None else raw])

    def release(self, item: ListItem) -> int:
        """Give an element not worked on back to the source list, to be taken first again (e.g. at a clean
        stop): atomically out of processing and onto the consuming end. Safe to repeat; returns 1 if moved."""
        return int(self._release(keys=[processing_key(self.key, item.partition), self.key], args=[item.raw]))

    def close(self) -> None:
        self._client.close()


class _AckPartition(StatelessSinkPartition[ListItem]):
    def __init__(self, acker: ListAcker) -> None:
        self._acker = acker

    def write_batch(self, items: list[ListItem]) -> None:
        self._acker.ack(items)

    def close(self) -> None:
        self._acker.close()


class AckSink(DynamicSink[ListItem]):
    """Acks every item that reaches it (explicit mode), one pipeline per batch: place it after the work."""

    def __init__(self, redis_url: str, key: str) -> None:
        self._url = redis_url
        self._key = key

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckPartition:
        return _AckPartition(ListAcker(self._url, self._key))
