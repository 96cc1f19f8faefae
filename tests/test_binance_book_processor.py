"""BookProcessor with the Binance adapter driven with ws events directly: the one-delta-per-frame path (the
adapter returns a bare delta) keeps the processor's rules: REST bootstrap, coalesced views, frames of removed or
unknown instruments, the frame and latency counters (the I/O side is covered against the simulator)."""

from __future__ import annotations

import orjson

from connectors.binance.book_source import BinanceBooks
from connectors.books.items import BookState, ShardStats
from connectors.books.processor import BookProcessor
from connectors.ws.events import Fetched, Frame, Subscribed, TopicsChecked
from operators.events import BookStatus, BookView, Level
from tests.book_helpers import RecordingControl as Control


def depth(inst: str, first: int, last: int, bids, asks) -> str:
    sym = inst.replace("-", "")
    data = {"e": "depthUpdate", "E": 1, "s": sym, "U": first, "u": last, "b": bids, "a": asks}
    return orjson.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": data}).decode()


REST = orjson.dumps({"lastUpdateId": 100, "bids": [["10", "1"], ["9", "2"]], "asks": [["11", "1"]]}).decode()


def ready() -> tuple[BookProcessor, Control]:
    control = Control()
    p = BookProcessor(0, control, BinanceBooks(), stale_after=3600, snapshot_wait=3600)
    p.on_events([TopicsChecked(0, True, ("ETH-USDT", "BTC-USDT"), ("ETH-USDT", "BTC-USDT")),
                 Subscribed(0, "ETH-USDT"), Subscribed(0, "BTC-USDT")])
    return p, control


def counters(p: BookProcessor) -> tuple[ShardStats, dict[str, int]]:
    stats = next(i for i in p.on_tick(10**18) if isinstance(i, ShardStats))
    return stats, dict(stats.counters)


def test_bootstrap_then_one_coalesced_view_per_batch_and_the_frame_counters() -> None:
    p, c = ready()
    assert p.on_events([Frame(depth("ETH-USDT", 95, 101, [["10", "3"]], []), 1_000, 0)]) == []
    assert c.fetched == ["ETH-USDT"]  # the first update asks for the REST snapshot
    out = p.on_events([Fetched("ETH-USDT", REST, None, 2_000),
                       Frame(depth("ETH-USDT", 102, 103, [], [["11", "0"], ["12", "4"]]), 3_000, 0),
                       Frame(depth("ETH-USDT", 104, 104, [["9", "0"]], []), 4_000, 0)])
    (view,) = [i for i in out if isinstance(i, BookView)]
    assert view.bids == (Level("10", "3"),) and view.asks == (Level("12", "4"),)
    assert (view.seq_id, view.recv_ns, view.status) == (104, 4_000, BookStatus.VALID)
    stats, _ = counters(p)
    assert stats.messages == 3 and stats.latency_ms > 0  # every frame counted, its receipt -> processed time too


def test_frames_of_a_removed_pair_are_not_bad_input_and_of_an_unknown_one_are() -> None:
    p, _ = ready()
    p.on_events([TopicsChecked(1, True, ("BTC-USDT",), (), ("ETH-USDT",))])  # removed, still subscribed
    out = p.on_events([Frame(depth("ETH-USDT", 1, 2, [["10", "1"]], []), 2, 0),
                       Frame(depth("XRP-USDT", 1, 2, [["10", "1"]], []), 3, 0)])
    assert not [i for i in out if isinstance(i, BookView)]
    _, seen = counters(p)
    assert seen["frames_after_removal"] == 1
    assert seen.get("rejected_messages") == 1  # XRP-USDT: no such pair in the shard's symbol map or books


def test_a_pair_added_back_before_its_unsubscribe_gets_a_book_from_its_frames() -> None:
    p, c = ready()
    p.on_events([TopicsChecked(1, True, ("BTC-USDT",), (), ("ETH-USDT",))])
    out = p.on_events([TopicsChecked(2, True, ("BTC-USDT", "ETH-USDT"), ("ETH-USDT",), ()),
                       Frame(depth("ETH-USDT", 95, 101, [["10", "3"]], []), 3, 0)])  # no Subscribed seen
    assert c.fetched == ["ETH-USDT"]  # its book started from the frame: the REST bootstrap asked for
    assert BookState("ETH-USDT", BookStatus.SYNCING, venue="binance") in out and "ETH-USDT" in p.sync
