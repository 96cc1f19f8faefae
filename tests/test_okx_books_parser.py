"""connectors/okx/books.py: one fixture per wire shape, REST bodies, rendering, and junk in -> typed errors out."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.market.frames import ParseError
from connectors.okx.books import PARSE_REASONS, parse_books_frame, parse_rest_books, render_books_snapshot
from connectors.okx.protocol import OkxHooks
from connectors.ws.hooks import Ack, Notice, Pong, Reject
from operators.book_checksum import okx_checksum
from operators.book_results import Applied
from operators.events import BookDelta, Level
from operators.orderbook import OrderBook
from tests.book_helpers import naive_checksum

RECV = 1_700_000_000_123_456_789

# Real frame (tests/data/okx/okx-2022-05-13-books-trades-tickers.jsonl), shortened to its first levels.
BOOKS_UPDATE_OLD = (
    '{"arg":{"channel":"books","instId":"BTC-USD-220527"},"action":"update","data":[{"asks":[["30249.4","0","0","0"],'
    '["30261","4","0","1"],["30310.3","19","0","1"]],"bids":[["30182.6","452","0","1"]],"ts":"1652459225464",'
    '"checksum":-914047754}]}'
)
# Today's shape (OKX docs): seqId/prevSeqId, checksum 0.
BOOKS_SNAPSHOT_NEW = (
    '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["41006.8","0.60038921",'
    '"0","1"],["41007","0.3","0","2"]],"bids":[["41006.3","0.30178218","0","2"],["41006.1","0.7","0","1"]],'
    '"ts":"1629966436396","checksum":0,"prevSeqId":-1,"seqId":123456}]}'
)
BOOKS5 = (
    '{"arg":{"channel":"books5","instId":"BCH-USDT"},"data":[{"asks":[["111.06","55154","0","2"]],'
    '"bids":[["111.05","57745","0","2"]],"instId":"BCH-USDT","ts":"1670324386802","seqId":363996337}]}'
)


def test_books_update_old_format() -> None:
    out = parse_books_frame(BOOKS_UPDATE_OLD.encode(), recv_ns=RECV)
    assert out == (
        BookDelta(
            venue="okx",
            instrument="BTC-USD-220527",
            action="update",
            bids=(Level("30182.6", "452"),),
            asks=(Level("30249.4", "0"), Level("30261", "4"), Level("30310.3", "19")),
            ts_ms=1652459225464,
            recv_ns=RECV,
            checksum=-914047754,
            seq_id=None,
            prev_seq_id=None,
        ),
    )


def test_books_snapshot_new_format_from_str() -> None:
    out = parse_books_frame(BOOKS_SNAPSHOT_NEW, recv_ns=RECV)
    assert isinstance(out, tuple) and len(out) == 1
    d = out[0]
    assert (d.instrument, d.action, d.seq_id, d.prev_seq_id, d.checksum, d.ts_ms) == (
        "BTC-USDT",
        "snapshot",
        123456,
        -1,
        0,
        1629966436396,
    )
    assert d.asks == (Level("41006.8", "0.60038921"), Level("41007", "0.3"))
    assert d.bids == (Level("41006.3", "0.30178218"), Level("41006.1", "0.7"))


def test_books5_is_a_snapshot() -> None:
    out = parse_books_frame(BOOKS5, recv_ns=RECV)
    assert isinstance(out, tuple)
    assert out[0].action == "snapshot" and out[0].instrument == "BCH-USDT" and out[0].seq_id == 363996337
    assert out[0].bids == (Level("111.05", "57745"),)


def test_several_data_entries_keep_order() -> None:
    frame = json.loads(BOOKS_SNAPSHOT_NEW)
    second = dict(frame["data"][0], seqId=123457, prevSeqId=123456, asks=[["41006.8", "0", "0", "0"]], bids=[])
    frame["action"] = "update"
    frame["data"] = [dict(frame["data"][0], prevSeqId=123455), second]
    out = parse_books_frame(json.dumps(frame), recv_ns=RECV)
    assert isinstance(out, tuple)
    assert [(d.seq_id, d.prev_seq_id) for d in out] == [(123456, 123455), (123457, 123456)]


def test_event_answers() -> None:
    """Events become the WebSocket machinery's control types, exactly as the books source's hooks read them."""
    hooks = OkxHooks("ws://x", channel="books")
    sub = '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}'
    assert parse_books_frame(sub, recv_ns=1) == Ack("subscribe", ("BTC-USDT",)) == hooks.classify(sub)
    with_id = '{"id":"1700","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}'
    assert parse_books_frame(with_id, recv_ns=1) == Ack("subscribe", ("BTC-USDT",), "1700")
    unsub = '{"event":"unsubscribe","arg":{"channel":"books","instId":"ETH-USDT"},"connId":"a4d3ae55"}'
    assert parse_books_frame(unsub, recv_ns=1) == Ack("unsubscribe", ("ETH-USDT",)) == hooks.classify(unsub)
    err = (
        '{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:FOO-BAR doesn\'t exist. '
        'Please use the correct URL, channel and parameters referring to API document.","connId":"a4d3ae55"}'
    )
    out = parse_books_frame(err, recv_ns=1)
    assert isinstance(out, Reject) and out.reason.startswith("60018 Wrong URL") and out.topics == ("FOO-BAR",)
    assert out == hooks.classify(err)
    notice = '{"event":"notice","code":"64008","msg":"The connection will soon be closed.","connId":"x"}'
    out = parse_books_frame(notice, recv_ns=1)
    assert out == Notice("64008 The connection will soon be closed.", reconnect=True) == hooks.classify(notice)
    assert parse_books_frame(b"pong", recv_ns=1) == Pong()
    count = '{"event":"channel-conn-count","channel":"books","connCount":"2","connId":"x"}'
    assert parse_books_frame(count, recv_ns=1) == Notice("channel-conn-count", reconnect=False)


def reason(raw: bytes | str) -> str:
    out = parse_books_frame(raw, recv_ns=1)
    assert isinstance(out, ParseError) and out.venue == "okx", out
    return out.reason


def test_typed_errors() -> None:
    assert reason(b'{"arg":{"channel":"books"') == "malformed_json"
    assert reason("ping?") == "malformed_json"
    assert reason(BOOKS_UPDATE_OLD.replace('"452"', "452")) == "wrong_type"
    assert reason(BOOKS_UPDATE_OLD.replace('"452"', '"-452"')) == "negative_size"
    assert reason(BOOKS_UPDATE_OLD.replace('"452"', '"abc"')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '"30182.6.1"')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '"-30182.6"')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '"30182.' + "6" * 21 + '"')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '"' + "3" * 41 + '"')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '""')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"30182.6"', '"."')) == "invalid_number"
    assert reason(BOOKS_UPDATE_OLD.replace('"1652459225464"', '"yesterday"')) == "wrong_type"
    assert reason(BOOKS_UPDATE_OLD.replace('"update"', '"partial"')) == "wrong_type"
    assert reason(BOOKS_UPDATE_OLD.replace(',"action":"update"', "")) == "wrong_type"
    assert reason(BOOKS_UPDATE_OLD.replace('"instId":"BTC-USD-220527"', '"instType":"SPOT"')) == "wrong_type"
    trades = '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1","sz":"1"}]}'
    assert reason(trades) == "unknown_channel"
    assert reason(BOOKS_UPDATE_OLD.replace('"books"', '"candle1m"')) == "unknown_channel"
    assert reason("[1,2,3]") == "unknown_message"
    assert reason('{"hello":"world"}') == "unknown_message"
    assert reason(b"\xff\xfe\x00") == "malformed_json"
    assert reason(BOOKS_UPDATE_OLD.replace('"452"', '"\\u0661"')) == "invalid_number"  # JSON-escaped Arabic 1
    assert reason(BOOKS_UPDATE_OLD.replace('"452"', '"\u0661"')) == "invalid_number"  # the raw character
    escaped = parse_books_frame(BOOKS_UPDATE_OLD.replace('"452"', '"4\\u00352"'), recv_ns=1)  # "4\u00352" = 452
    assert isinstance(escaped, tuple) and escaped[0].bids == (Level("30182.6", "452"),)
    err = parse_books_frame(BOOKS_UPDATE_OLD.replace('"452"', '"-452"'), recv_ns=7)
    assert isinstance(err, ParseError) and err.raw.startswith('{"arg"') and "-452" in err.detail


NON_BOOK = (Ack, Reject, Notice, Pong, ParseError)


def assert_typed(out: object) -> None:
    if isinstance(out, tuple):
        assert out and all(isinstance(d, BookDelta) for d in out)
        return
    assert isinstance(out, NON_BOOK), out
    if isinstance(out, ParseError):
        assert out.reason in PARSE_REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
level_like = st.lists(
    st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(["1", "0", "-1", "1.5", ""])), max_size=5
)
frame_like = st.fixed_dictionaries(
    {
        "arg": st.fixed_dictionaries(
            {"channel": st.sampled_from(["books", "books5", "books-l2-tbt", "trades"]) | st.text(max_size=5)},
            optional={"instId": st.text(max_size=8) | st.integers()},
        ),
    },
    optional={
        "action": st.sampled_from(["snapshot", "update", "x"]) | st.integers(),
        "data": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "asks": st.lists(level_like, max_size=3) | json_values,
                    "bids": st.lists(level_like, max_size=3),
                    "ts": st.sampled_from(["1652459225464", "x", ""]) | st.integers(),
                    "checksum": st.integers() | st.text(max_size=3),
                    "seqId": st.integers() | st.none(),
                    "prevSeqId": st.integers(),
                },
            ),
            max_size=3,
        ),
        "event": st.sampled_from(["subscribe", "error", "notice", "login"]) | json_values,
        "code": json_values,
        "msg": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_junk_in_only_typed_errors_out(raw: bytes | str) -> None:
    assert_typed(parse_books_frame(raw, recv_ns=1))


@settings(max_examples=400, deadline=None)
@given(obj=json_values | frame_like)
def test_json_junk_in_only_typed_values_out(obj: object) -> None:
    raw = msgspec.json.encode(obj)
    assert_typed(parse_books_frame(raw, recv_ns=1))
    assert_typed(parse_books_frame(raw.decode(), recv_ns=1))
    cut = raw[: len(raw) // 2]
    assert_typed(parse_books_frame(cut, recv_ns=1))


@settings(max_examples=200, deadline=None)
@given(obj=json_values | frame_like)
def test_rest_junk_in_only_typed_values_out(obj: object) -> None:
    out = parse_rest_books(msgspec.json.encode(obj), instrument="BTC-USDT", recv_ns=1)
    assert isinstance(out, BookDelta | Reject | ParseError)


REST_BODY = (
    '{"code":"0","msg":"","data":[{"asks":[["41006.8","0.60038921","0","1"],["41007","0.3","0","2"]],'
    '"bids":[["41006.3","0.30178218","0","2"]],"ts":"1629966436396","seqId":777}]}'
)


def test_rest_books_body_to_snapshot() -> None:
    d = parse_rest_books(REST_BODY, instrument="BTC-USDT", recv_ns=5)
    assert d == BookDelta(
        venue="okx",
        instrument="BTC-USDT",
        action="snapshot",
        bids=(Level("41006.3", "0.30178218"),),
        asks=(Level("41006.8", "0.60038921"), Level("41007", "0.3")),
        ts_ms=1629966436396,
        recv_ns=5,
        checksum=0,
        seq_id=777,
        prev_seq_id=-1,
    )
    no_seq = parse_rest_books(REST_BODY.replace(',"seqId":777', ""), instrument="BTC-USDT", recv_ns=5)
    assert isinstance(no_seq, BookDelta) and no_seq.seq_id is None and no_seq.prev_seq_id is None
    err = parse_rest_books(
        '{"code":"51001","msg":"Instrument ID does not exist","data":[]}', instrument="X-Y", recv_ns=5
    )
    assert err == Reject("51001 Instrument ID does not exist", ("X-Y",))
    bad = parse_rest_books("<html>", instrument="X-Y", recv_ns=5)
    assert isinstance(bad, ParseError) and bad.reason == "malformed_json"


def test_render_snapshot_round_trips_through_the_parser_and_a_book() -> None:
    d = parse_rest_books(REST_BODY, instrument="BTC-USDT", recv_ns=5)
    assert isinstance(d, BookDelta)
    text = render_books_snapshot(d)
    frame = json.loads(text)
    assert frame["arg"] == {"channel": "books", "instId": "BTC-USDT"} and frame["action"] == "snapshot"
    assert frame["data"][0]["asks"][0] == ["41006.8", "0.60038921", "0", "0"]
    assert (frame["data"][0]["seqId"], frame["data"][0]["prevSeqId"]) == (777, -1)
    back = parse_books_frame(text, recv_ns=5)
    assert isinstance(back, tuple)
    assert (back[0].bids, back[0].asks, back[0].seq_id, back[0].ts_ms) == (d.bids, d.asks, 777, d.ts_ms)
    assert back[0].checksum == naive_checksum([(lv.price, lv.size) for lv in d.bids],
                                              [(lv.price, lv.size) for lv in d.asks])
    book = OrderBook("BTC-USDT")
    assert book.apply(back[0]) == Applied("snapshot")
    # a view renders too (the collector may push the book as it stands after replaying buffered updates)
    again = parse_books_frame(render_books_snapshot(book.view(), channel="books-l2-tbt"), recv_ns=6)
    assert isinstance(again, tuple) and again[0].bids == d.bids and again[0].asks == d.asks


# --- the rendered checksum against the independent one (tests/book_helpers.py) -----------------------------
def _side(n: int, *, start: int, step: int) -> tuple[Level, ...]:
    return tuple(Level(f"{start + step * i}.{i % 10}", f"{i + 1}.{i % 7}5") for i in range(n))


@pytest.mark.parametrize(("n_bids", "n_asks"), [
    (30, 30), (30, 10), (10, 30), (26, 25), (25, 26), (24, 24), (400, 400), (400, 3), (0, 30), (30, 0),
])
def test_rendered_checksum_covers_25_levels_of_deep_and_uneven_books(n_bids: int, n_asks: int) -> None:
    bids, asks = _side(n_bids, start=50_000, step=-1), _side(n_asks, start=50_001, step=1)
    d = BookDelta(venue="okx", instrument="BTC-USDT", action="snapshot", bids=bids, asks=asks,
                  ts_ms=1_700_000_000_000, recv_ns=5, checksum=0, seq_id=9, prev_seq_id=-1)
    want = naive_checksum([(lv.price, lv.size) for lv in bids], [(lv.price, lv.size) for lv in asks])
    assert okx_checksum(bids, asks) == want
    back = parse_books_frame(render_books_snapshot(d), recv_ns=6)
    assert isinstance(back, tuple) and back[0].checksum == want
    assert (back[0].bids, back[0].asks) == (bids, asks)
    book = OrderBook("BTC-USDT")  # the book's own checksum path agrees with the rendered one
    assert book.apply(back[0]) == Applied("snapshot")
    if n_bids > 25 or n_asks > 25:  # a level beyond the 25th changes nothing, the 25th does
        deeper_bids = [*bids, Level("1.1", "7")] if n_bids >= 25 else bids
        deeper_asks = [*asks, Level("99999.9", "7")] if n_asks >= 25 else asks
        assert okx_checksum(deeper_bids, deeper_asks) == want
        longest = bids if n_bids > 25 else asks
        changed = (*longest[:24], Level(longest[24].price, "424242"), *longest[25:])
        assert okx_checksum(*((changed, asks) if longest is bids else (bids, changed))) != want


RECORDED_BOOK_FRAMES = {"okx-2021-07-22-books-l2-tbt.jsonl": 1504, "okx-2022-05-13-books-trades-tickers.jsonl": 290}


@pytest.mark.parametrize("name", sorted(RECORDED_BOOK_FRAMES))
def test_rendered_checksum_of_recorded_books_is_the_venues(name: str) -> None:
    """Real frames carry OKX's own checksum: the book after each frame, rendered as a snapshot, carries it too."""
    books: dict[str, OrderBook] = {}
    checked = deep = 0
    with (Path(__file__).parent / "data" / "okx" / name).open() as f:
        for line in f:
            out = parse_books_frame(json.loads(line)["data"], recv_ns=1)
            if not isinstance(out, tuple):
                continue
            for d in out:
                book = books.setdefault(d.instrument, OrderBook(d.instrument))
                assert book.apply(d) == Applied(d.action)
                view = book.view()
                assert naive_checksum([(lv.price, lv.size) for lv in view.bids],
                                      [(lv.price, lv.size) for lv in view.asks]) == d.checksum != 0
                assert okx_checksum(view.bids, view.asks) == d.checksum
                if checked % 10 == 0 or d.action == "snapshot":  # rendering 400 levels is the slow part
                    rendered = parse_books_frame(render_books_snapshot(view), recv_ns=2)
                    assert isinstance(rendered, tuple) and rendered[0].checksum == d.checksum
                checked += 1
                deep += len(view.bids) > 25 and len(view.asks) > 25
    assert checked == RECORDED_BOOK_FRAMES[name]
    assert deep > checked // 2  # most of them deeper than 25 levels on both sides
