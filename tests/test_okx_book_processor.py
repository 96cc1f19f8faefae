"""OkxBookProcessor (the worker side of the OKX books source) driven with ws events directly: what it emits
and what it asks of its shard (a recording ShardControl; the I/O side is covered against the simulator)."""

from __future__ import annotations

import orjson

from connectors.okx.book_source import BookState, BufferFrame, OkxBookProcessor, ShardStats
from connectors.ws.events import Disconnected, Fetched, Frame, Subscribed, TopicsChecked
from operators.book_checksum import okx_checksum
from operators.events import BookStatus, BookView, Level
from tests.book_helpers import RecordingControl as Control


def frame(inst: str, action: str, bids, asks, prev: int, seq: int, checksum: int = 0) -> str:
    data = {"asks": [[p, s, "0", "1"] for p, s in asks], "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": "1700000000000", "checksum": checksum, "prevSeqId": prev, "seqId": seq}
    return orjson.dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [data]}).decode()


SNAP = frame("A-B", "snapshot", [("10", "1"), ("9", "2")], [("11", "1"), ("12", "3")], -1, 100,
             okx_checksum([Level("10", "1"), Level("9", "2")], [Level("11", "1"), Level("12", "3")]))


def ready(control: Control | None = None) -> tuple[OkxBookProcessor, Control]:
    control = control or Control()
    p = OkxBookProcessor(0, control, channel="books", stale_after=1.0, snapshot_wait=0.5)
    p.on_events([TopicsChecked(0, True, ("A-B", "C-D"), ("A-B", "C-D")), Subscribed(0, "A-B"),
                 Subscribed(0, "C-D")])
    return p, control


def views(items) -> list[BookView]:
    return [i for i in items if isinstance(i, BookView)]


def test_coalesces_one_view_per_instrument_per_batch_and_buffers_every_frame() -> None:
    p, c = ready()
    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    u2 = frame("A-B", "update", [], [("11", "0")], 101, 102)
    out = p.on_events([Frame(SNAP, 1, 0), Frame(u1, 2, 0), Frame(u2, 3, 0)])
    (view,) = views(out)
    assert view.bids == (Level("10", "5"), Level("9", "2")) and view.asks == (Level("12", "3"),)
    assert (view.seq_id, view.recv_ns, view.status) == (102, 3, BookStatus.VALID)
    assert [i.text for i in out if isinstance(i, BufferFrame)] == [SNAP, u1, u2]
    assert not c.resubscribed and not c.fetched


def test_gap_resyncs_only_that_instrument_and_duplicates_are_ignored() -> None:
    p, c = ready()
    p.on_events([Frame(SNAP, 1, 0)])
    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    assert not [i for i in p.on_events([Frame(u1, 2, 0), Frame(u1, 3, 0)]) if isinstance(i, BookState)]
    out = p.on_events([Frame(frame("A-B", "update", [("9", "1")], [], 105, 106), 4, 0)])
    assert BookState("A-B", BookStatus.RESYNCING) in out and not views(out)
    assert not [i for i in out if isinstance(i, BufferFrame)]  # a broken chain is not passed on
    assert c.resubscribed == ["A-B"]
    out = p.on_events([Frame(SNAP, 5, 0)])  # the fresh snapshot after resubscribing
    assert views(out)[0].status is BookStatus.VALID
    stats = next(i for i in p.on_tick(10**18) if isinstance(i, ShardStats))
    # the five data frames fed above; subscription_changes: 2
    assert dict(stats.counters) == {"gaps": 1, "resyncs": 1, "duplicate_frames": 1, "frames_received": 5}
    # went out with ready()'s subscriptions, in the stats that reported active_pairs 2


def test_update_without_snapshot_bootstraps_from_rest_with_buffered_updates() -> None:
    p, c = ready()
    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    u2 = frame("A-B", "update", [("8", "1")], [], 101, 102)
    assert not views(p.on_events([Frame(u1, 1, 0), Frame(u2, 2, 0)]))
    assert c.fetched == ["A-B"]
    rest = orjson.dumps({"code": "0", "msg": "", "data": [{"asks": [["11", "1", "0", "1"]],
                                                             "bids": [["10", "1", "0", "1"]], "ts": "1700000000000",
                                                             "seqId": 100}]}).decode()
    out = p.on_events([Fetched("A-B", rest, None, 3)])
    (view,) = views(out)
    assert view.bids == (Level("10", "5"), Level("8", "1")) and view.seq_id == 102
    buffered = [i.text for i in out if isinstance(i, BufferFrame)]
    assert orjson.loads(buffered[0])["action"] == "snapshot" and buffered[1:] == [u1, u2]


def test_stale_disconnect_removal_and_bad_input() -> None:
    p, _ = ready()
    p.on_events([Frame(SNAP, 1, 0)])
    assert BookState("A-B", BookStatus.STALE) in p.on_tick(2_000_000_000)  # 1 s without a frame
    out = p.on_events([Disconnected(0, "dropped", ("A-B",))])
    assert BookState("A-B", BookStatus.RESYNCING) in out
    out = p.on_events([Frame('{"arg":{"channel":"books","instId":"A-B"},"action":"upd', 2, 0),
                       Frame('{"arg":{"channel":"candle1m","instId":"A-B"},"data":[[]]}', 3, 0),
                       Frame(frame("A-B", "update", [("9", "-1")], [], 100, 101), 4, 0),
                       TopicsChecked(5, True, ("C-D",), (), ("A-B",))])
    assert out == [BookState("A-B", BookStatus.SYNCING, removed=True)]
    counters = dict(next(i for i in p.on_tick(10**18) if isinstance(i, ShardStats)).counters)
    assert counters["rejected_messages"] == 3
    assert {k for k in counters if k.startswith("rejected_")} >= {"rejected_malformed_json",
                                                                  "rejected_unknown_channel",
                                                                  "rejected_negative_size"}


def test_a_book_that_fails_later_in_the_batch_publishes_no_view() -> None:
    p, c = ready()
    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    bad = frame("A-B", "update", [("9", "7")], [], 101, 102, checksum=12345)  # a wrong checksum
    out = p.on_events([Frame(SNAP, 1, 0), Frame(u1, 2, 0), Frame(bad, 3, 0)])
    assert not views(out)  # the hash keeps its last verified levels; only the status changes
    assert BookState("A-B", BookStatus.RESYNCING) in out
    assert [i.text for i in out if isinstance(i, BufferFrame)] == [SNAP, u1]
    assert c.resubscribed == ["A-B"]


def test_frames_after_a_removal_are_not_bad_input_and_a_pair_added_back_gets_a_book() -> None:
    p, c = ready()
    p.on_events([Frame(SNAP, 1, 0)])
    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    out = p.on_events([TopicsChecked(2, True, ("C-D",), (), ("A-B",)), Frame(u1, 3, 0)])  # still subscribed
    assert out[1:] == [BookState("A-B", BookStatus.SYNCING, removed=True)]
    assert isinstance(out[0], ShardStats) and out[0].active_pairs == 1  # the gauge moved: reported first
    counters = dict(out[0].counters)  # with the counters of the same events
    assert counters["frames_after_removal"] == 1 and "rejected_messages" not in counters
    # Added back before the unsubscribe went out: no new Subscribed comes, the stream just goes on.
    u2 = frame("A-B", "update", [("9", "4")], [], 101, 102)
    out = p.on_events([TopicsChecked(4, True, ("A-B", "C-D"), ("A-B",), ()), Frame(u2, 5, 0)])
    assert BookState("A-B", BookStatus.SYNCING) in out and c.fetched == ["A-B"]  # bootstrapped from REST


def test_parsed_deltas_ride_along_only_when_asked() -> None:
    from connectors.okx.books import parse_books_frame

    u1 = frame("A-B", "update", [("10", "5")], [], 100, 101)
    plain, _ = ready()
    assert [i.deltas for i in plain.on_events([Frame(SNAP, 1, 0), Frame(u1, 2, 0)])
            if isinstance(i, BufferFrame)] == [(), ()]  # the collector does not keep them alive
    control = Control()
    p = OkxBookProcessor(0, control, channel="books", stale_after=1.0, snapshot_wait=0.5, with_deltas=True)
    p.on_events([TopicsChecked(0, True, ("A-B",), ("A-B",)), Subscribed(0, "A-B")])
    out = [i for i in p.on_events([Frame(SNAP, 1, 0), Frame(u1, 2, 0)]) if isinstance(i, BufferFrame)]
    assert [f.deltas for f in out] == [parse_books_frame(SNAP, recv_ns=1), parse_books_frame(u1, recv_ns=2)]
