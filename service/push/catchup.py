"""What a subscriber is sent before it joins the live fan-out, read from Redis.

* ``since`` (any channel): the entries after that id, if the stream still holds everything after it and
  there are at most ``limit`` of them (``PUSH_QUEUE_MAX``: a replay never queues more than a live client may
  have waiting); otherwise ``None``, and the caller sends a fresh snapshot marked ``reset``.
* a state channel: its newest entry (each entry is a whole state).
* ``@depth``: the ``orderbook:{inst}`` hash (the whole book at its ``seq_id``) and the newest entries of the
  stream, read in one MULTI so that the two are one moment; the caller drops the entries the hash already
  contains (``seq <= seq_id``) and chains on from the hash with the rest.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from connectors.redis.keys import orderbook_key
from operators.book_checksum import okx_checksum
from operators.events import Level
from service.push.channels import Channel, StreamId, format_id
from service.push.entries import Entry, parse_entries

DEPTH_RECENT = 200  # entries read with a depth snapshot: far more than one collector batch writes
_levels = msgspec.json.Decoder(tuple[Level, ...])


async def newest(client: aioredis.Redis, channel: Channel) -> list[Entry]:
    rows: Any = await client.xrevrange(channel.stream, count=1)
    return parse_entries(channel.name, rows)


async def replay(client: aioredis.Redis, channel: Channel, since: StreamId, limit: int) -> list[Entry] | None:
    """The entries after ``since``, or ``None`` when some may be gone (trimmed) or there are over ``limit``."""
    pipe = client.pipeline(transaction=True)
    pipe.xrange(channel.stream, count=1)
    pipe.xrange(channel.stream, min=f"({format_id(since)}", count=limit + 1)
    first, rows = await pipe.execute()
    if len(rows) > limit:
        return None
    # trimming removes the oldest entries: all after ``since`` are still there iff ``since`` is not older
    # than the oldest entry kept
    if first and parse_entries(channel.name, first)[0].sid > since:
        return None
    return parse_entries(channel.name, rows)


class DepthSnapshot(msgspec.Struct, frozen=True):
    seq: int  # -1: no valid book yet
    data: bytes  # the snapshot event's data, JSON
    recent: list[Entry]  # oldest first
    last_id: str  # the newest entry id at that moment ("0-0": empty stream)
    status: str


async def depth_snapshot(client: aioredis.Redis, channel: Channel) -> DepthSnapshot:
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(orderbook_key(channel.instrument))
    pipe.xrevrange(channel.stream, count=DEPTH_RECENT)
    fields, rows = await pipe.execute()
    recent = parse_entries(channel.name, list(reversed(rows)))
    last_id = recent[-1].id if recent else "0-0"
    f: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
    status = f.get("status", "syncing")
    bids_text, asks_text = f.get("bids", "[]"), f.get("asks", "[]")
    seq = int(f["seq_id"]) if f.get("seq_id") and status in ("valid", "stale") else -1
    if seq < 0:
        bids_text = asks_text = "[]"
        checksum = 0
    else:
        checksum = okx_checksum(_levels.decode(bids_text), _levels.decode(asks_text))
    # the hash's JSON arrays are spliced in as they are: no re-encoding of 400 levels per subscriber
    data = (f'{{"type":"snapshot","bids":{bids_text},"asks":{asks_text},"seq":{seq},'
            f'"checksum":{checksum},"status":"{status}"}}').encode()
    return DepthSnapshot(seq, data, recent, last_id, status)
