"""The sinks' side of the push channels: what :class:`connectors.redis.push_streams.DepthPublisher` writes to a real
Redis, applied by a naive client, gives back every book it was shown; the checksum is the naive algorithm's."""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import redis

from connectors.redis.push_streams import DepthPublisher, Fields, StreamEvent, queue_events, stream_key
from operators.events import BookStatus, BookView, Level
from tests.book_helpers import naive_checksum


def _view(inst: str, bids: dict[str, str], asks: dict[str, str], seq: int,
          status: BookStatus = BookStatus.VALID) -> BookView:
    b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))
    return BookView(venue="okx", instrument=inst, status=status, bids=tuple(Level(p, s) for p, s in b),
                    asks=tuple(Level(p, s) for p, s in a), ts_ms=seq, recv_ns=0, seq_id=seq)


def test_depth_entries_rebuild_every_book(redis_db: redis.Redis) -> None:
    rng = random.Random(3)
    pub = DepthPublisher(maxlen=100_000, interval_s=0.0)
    bids = {f"{100 - i * 0.5:.1f}": f"{rng.randint(1, 9)}.0" for i in range(60)}
    asks = {f"{101 + i * 0.5:.1f}": f"{rng.randint(1, 9)}.0" for i in range(60)}
    shown: dict[int, tuple[list[list[str]], list[list[str]]]] = {}
    seq = 1000
    for step in range(300):
        for side, base, sign in ((bids, 100.0, -1), (asks, 101.0, 1)):
            for _ in range(rng.randint(0, 6)):
                price = f"{base + sign * rng.randint(0, 80) * 0.5:.1f}"
                if rng.random() < 0.3:
                    side.pop(price, None)
                else:
                    side[price] = f"{rng.randint(1, 9)}.{rng.randint(0, 99):02d}"
        seq += rng.randint(1, 3)
        status = BookStatus.RESYNCING if step == 150 else BookStatus.VALID  # a resync: the next is a snapshot
        view = _view("BTC-USDT", bids, asks, seq, status)
        pipe = redis_db.pipeline(transaction=False)
        pub.publish(pipe, [view])
        pipe.execute()
        if status is BookStatus.VALID:
            shown[seq] = ([[lv.price, lv.size] for lv in view.bids], [[lv.price, lv.size] for lv in view.asks])

    client_bids: dict[str, str] = {}
    client_asks: dict[str, str] = {}
    client_seq = None
    kinds = []
    for _, fields in redis_db.xrange("stream:BTC-USDT@depth"):
        data = orjson.loads(fields["d"])
        kinds.append(data["type"])
        if data["type"] == "snapshot":
            client_bids, client_asks = dict(data["bids"]), dict(data["asks"])
        else:
            assert data["prev_seq"] == client_seq
            for book, levels in ((client_bids, data["bids"]), (client_asks, data["asks"])):
                for p, s in levels:
                    if s == "0":
                        book.pop(p, None)
                    else:
                        book[p] = s
        client_seq = data["seq"]
        b = [[p, s] for p, s in sorted(client_bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)]
        a = [[p, s] for p, s in sorted(client_asks.items(), key=lambda kv: Decimal(kv[0]))]
        assert (b, a) == shown[client_seq]
        assert naive_checksum(b, a) == data["checksum"]
    assert kinds.count("snapshot") == 2 and len(kinds) == len(shown)  # the first, and the one after the resync
    top = orjson.loads(redis_db.xrevrange("stream:BTC-USDT@depth5", count=1)[0][1]["d"])
    assert [top["bids"], top["asks"]] == [shown[seq][0][:5], shown[seq][1][:5]]


def test_queued_events_keep_each_channels_order_with_and_without_fields(redis_db: redis.Redis) -> None:
    events: list[StreamEvent] = []
    for i in range(40):  # interleaved channels; runs of plain events and of events with fields
        fields: Fields = ("t", "update", "s", i) if i % 7 in (3, 4) else ()
        events.append((f"C{i % 3}@trades", orjson.dumps({"i": i}), fields))
    pipe = redis_db.pipeline(transaction=False)
    queue_events(pipe, events, 1000)
    assert pipe.execute() == [40]
    for c in range(3):
        got = [(orjson.loads(f["d"])["i"], {k: v for k, v in f.items() if k != "d"})
               for _, f in redis_db.xrange(stream_key(f"C{c}@trades"))]
        want = [(i, {"t": "update", "s": str(i)} if i % 7 in (3, 4) else {}) for i in range(c, 40, 3)]
        assert got == want
