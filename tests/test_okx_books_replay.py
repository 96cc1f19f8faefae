"""Replay the real OKX recordings (tests/data/okx/, see tests/data/README.md) through parser + book."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from connectors.market.frames import ParseError
from connectors.okx.books import parse_books_frame
from connectors.ws.hooks import Ack, Notice, Reject
from operators.book_results import Applied, ChecksumMismatch, SequenceGap
from operators.events import BookDelta, BookStatus
from operators.orderbook import OrderBook
from tests.book_helpers import NaiveBook

DATA = Path(__file__).parent / "data" / "okx"
RECORDINGS = {
    # file: (book channel, book frames, instruments)
    "okx-2022-05-13-books-trades-tickers.jsonl": ("books", 290, 3),
    "okx-2021-07-22-books-l2-tbt.jsonl": ("books-l2-tbt", 1504, 10),
}


def frames(name: str) -> list[str]:
    with (DATA / name).open() as f:
        return [json.loads(line)["data"] for line in f]


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_every_recorded_checksum_verifies(name: str) -> None:
    _channel, expected_frames, expected_instruments = RECORDINGS[name]
    books: dict[str, OrderBook] = {}
    models: dict[str, NaiveBook] = {}
    results: Counter[str] = Counter()
    others: Counter[str] = Counter()
    checked = 0
    for i, raw in enumerate(frames(name)):
        out = parse_books_frame(raw.encode(), recv_ns=i)
        if not isinstance(out, tuple):
            # the recordings also hold trades/tickers (not book channels) and the subscribe answers
            assert (isinstance(out, Ack) and out.op == "subscribe") or (
                isinstance(out, ParseError) and out.reason == "unknown_channel"
            ), out
            others[type(out).__name__] += 1
            continue
        for d in out:
            assert isinstance(d, BookDelta) and d.checksum != 0
            book = books.setdefault(d.instrument, OrderBook(d.instrument))
            result = book.apply(d)
            assert result == Applied(d.action), (i, d.instrument, result)
            assert book.status is BookStatus.VALID
            models.setdefault(d.instrument, NaiveBook()).apply(d)
            results[d.action] += 1
            checked += 1
    assert checked == expected_frames
    assert results["snapshot"] == expected_instruments
    assert len(books) == expected_instruments
    for inst, book in books.items():  # the final books equal the naive model's, level for level
        view = book.view()
        assert [(lv.price, lv.size) for lv in view.bids] == models[inst].sorted_bids()
        assert [(lv.price, lv.size) for lv in view.asks] == models[inst].sorted_asks()
        assert book.computed_checksum() == view.checksum


def test_corrupted_frame_is_caught() -> None:
    raws = frames("okx-2022-05-13-books-trades-tickers.jsonl")
    # corrupt the size of the first level of the 50th books update, keeping the frame well-formed
    updates = [i for i, r in enumerate(raws) if '"channel":"books"' in r and '"action":"update"' in r]
    target = updates[50]
    frame = json.loads(raws[target])
    level = (frame["data"][0]["asks"] or frame["data"][0]["bids"])[0]
    level[1] = str(int(level[1]) + 1) if level[1] != "0" else "1"
    raws[target] = json.dumps(frame)
    victim = frame["arg"]["instId"]
    books: dict[str, OrderBook] = {}
    failures = []
    for i, raw in enumerate(raws):
        out = parse_books_frame(raw, recv_ns=i)
        if isinstance(out, tuple):
            for d in out:
                result = books.setdefault(d.instrument, OrderBook(d.instrument)).apply(d)
                if not isinstance(result, Applied):
                    failures.append((i, d.instrument, result))
    assert failures, "the corrupted frame went unnoticed"
    first_i, first_inst, first = failures[0]
    assert (first_i, first_inst) == (target, victim)
    assert isinstance(first, ChecksumMismatch) and first.expected == frame["data"][0]["checksum"]
    assert books[victim].status is BookStatus.RESYNCING
    # the other instruments are untouched
    assert all(b.status is BookStatus.VALID for inst, b in books.items() if inst != victim)
    assert all(inst == victim for _, inst, _ in failures)


def test_dropped_frame_is_caught_by_checksum_alone() -> None:
    raws = frames("okx-2021-07-22-books-l2-tbt.jsonl")
    updates = [i for i, r in enumerate(raws) if '"books-l2-tbt"' in r and '"action":"update"' in r]
    dropped = updates[100]
    victim = json.loads(raws[dropped])["arg"]["instId"]
    books: dict[str, OrderBook] = {}
    first_failure = None
    for i, raw in enumerate(raws):
        if i == dropped:
            continue
        out = parse_books_frame(raw, recv_ns=i)
        if isinstance(out, tuple):
            for d in out:
                result = books.setdefault(d.instrument, OrderBook(d.instrument)).apply(d)
                if first_failure is None and not isinstance(result, Applied):
                    first_failure = (d.instrument, result)
    assert first_failure is not None
    assert first_failure[0] == victim
    assert isinstance(first_failure[1], ChecksumMismatch | SequenceGap)


REAL = [r for r in frames("okx-2022-05-13-books-trades-tickers.jsonl") if '"channel":"books"' in r and '"data"' in r]
SYNCED: dict[str, OrderBook] = {}
for _raw in REAL:
    _out = parse_books_frame(_raw, recv_ns=0)
    assert isinstance(_out, tuple)
    for _d in _out:
        SYNCED.setdefault(_d.instrument, OrderBook(_d.instrument)).apply(_d)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(REAL) - 1),
    cut=st.tuples(st.integers(0, 2000), st.integers(0, 40)),
    junk=st.binary(max_size=12) | st.sampled_from([b"-", b"0", b'"', b"]", b"[", b",", b".", b"e5", b"\\u0661"]),
)
def test_mutated_real_frames_give_typed_results_and_never_break_a_book(
    index: int, cut: tuple[int, int], junk: bytes
) -> None:
    raw = REAL[index].encode()
    start = cut[0] % (len(raw) + 1)
    mutated = raw[:start] + junk + raw[start + cut[1] :]
    out = parse_books_frame(mutated, recv_ns=1)
    event(type(out).__name__ if not isinstance(out, tuple) else "deltas")
    if not isinstance(out, tuple):
        assert isinstance(out, ParseError | Ack | Reject | Notice), out
        return
    for d in out:
        base = SYNCED.get(d.instrument)
        book = pickle.loads(pickle.dumps(base)) if base is not None else OrderBook(d.instrument)
        result = book.apply(d)
        event(result.kind)
        assert result.kind in {
            "applied",
            "heartbeat",
            "not_synced",
            "sequence_gap",
            "checksum_mismatch",
            "book_crossed",
            "invalid_level",
        }
        for lv in (*d.bids, *d.asks):  # what the parser lets through is a plain decimal
            for text in (lv.price, lv.size):
                assert text.replace(".", "", 1).isdigit() and text.isascii(), lv
        assert 0 <= d.ts_ms < 10**16
        book.view()
        # whatever the parser lets through, the book accepts as levels (no InvalidLevel from parsed data)
        as_snapshot = msgspec.structs.replace(d, action="snapshot", checksum=0)
        assert OrderBook(d.instrument).apply(as_snapshot).kind in {"applied", "book_crossed"}
