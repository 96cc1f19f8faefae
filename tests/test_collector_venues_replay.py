"""Real Binance and Bybit sessions replayed THROUGH THE COLLECTOR into a real Redis.

The simulator (a real process) serves each recording itself (``--replay``: a subscribed stream or topic gets
its recorded frames in order, and Binance's ``/api/v3/depth`` the recorded REST body); the collector (a real
``python -m bytewax.run dataflows.orderbook_collector`` process, ``BOOK_VENUES=binance`` or ``bybit``)
subscribes as it would to the venue. Every write Redis received is watched (MONITOR,
:class:`tests.book_watch.BookWatch`).

* Binance (``tests/data/simulator/binance/binance-2024-08-08-ethusdt-depth-trade.jsonl.gz``, an unmodified copy of
  ``../shared/recordings/binance/``; 6,470 ``depth@100ms`` events of ETHUSDT, replayed at 20x): the final
  ``orderbook:binance:ETH-USDT`` equals an independent rebuild (:class:`NaiveBinanceBook`, Binance's documented
  procedure written out plainly) at the last update id, with no resync and one REST snapshot. Best bid/ask
  against the recording's ``bookTicker`` messages, with the reasoning of ``tests/test_binance_books_replay.py``:
  a ``bookTicker`` carries the update id ``u`` it is valid from, so the book as of update id ``u`` must show
  the ``bookTicker`` in force at ``u`` (the last one with ``bookTicker.u <= u``). Here each hash WRITE is such
  a state (its ``seq_id`` is the last applied ``u``; the sink coalesces a batch's updates into one write), and
  a ``bookTicker`` is *checkable* when it is in force at some written ``seq_id``; the others were superseded
  before any state the collector wrote and nothing written can show them.
* Bybit (``bybit-2024-12-01-xrpusdt-orderbook500.jsonl``: linear ``orderbook.500``; ``bybit-2025-06-13-
  orderbook1.jsonl``: ``orderbook.1`` of 6 spot and 4 linear symbols, one collector each): every final
  ``orderbook:bybit:{inst}`` equals an independent rebuild (:class:`NaiveBybitBooks`), with no resync.

Every wait is bounded and says what it waited for; nothing is timed.
"""

from __future__ import annotations

import gzip
import json
from bisect import bisect_right
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.binance.books import BookTicker, parse_binance_book_frame
from tests.book_watch import BookWatch
from tests.collector_helpers import Collector, start_collector
from tests.test_binance_books_replay import NaiveBinanceBook
from tests.test_bybit_books_replay import NaiveBybitBooks
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data/simulator"
BINANCE = DATA / "binance/binance-2024-08-08-ethusdt-depth-trade.jsonl.gz"
KEY = "orderbook:binance:ETH-USDT"


def hash_book(r: redis.Redis, key: str) -> dict[str, Any]:
    h = r.hgetall(key)
    return {**h, "bids": json.loads(h["bids"]), "asks": json.loads(h["asks"])} if "bids" in h else h


def no_resync(col: Collector, r: redis.Redis) -> None:
    assert [e for name in ("book_integrity_failed", "book_resync_failed", "book_rest_failed", "book_stale")
            for e in col.events(name)] == []
    mon = r.hgetall("system:monitoring")
    assert int(mon.get("resyncs", 0)) == 0 and int(mon.get("gaps", 0)) == 0, mon


def test_binance_recording_through_the_collector(start_simulator, redis_server, redis_db, tmp_path: Path) -> None:
    with gzip.open(BINANCE, "rt") as f:
        rows = [json.loads(line) for line in f]
    naive = NaiveBinanceBook()
    tickers: list[BookTicker] = []
    for row in rows:
        text = str(row["data"])
        if "/api/v3/depth" in str(row["source"]):
            naive.snapshot(json.loads(text))
            continue
        item = parse_binance_book_frame(text, recv_ns=0, symbols={"ETHUSDT": "ETH-USDT"})
        if isinstance(item, BookTicker):
            tickers.append(item)
        elif '"depthUpdate"' in text:
            naive.event(json.loads(text)["data"])
    bids, asks = naive.levels()
    assert len(tickers) == 58758 and naive.last is not None

    watch = BookWatch(redis_server.port).start()
    sim = start_simulator("--replay", str(BINANCE), "--speed", "20")
    r = redis_db
    r.sadd("config:trading_pairs", "ETH-USDT")
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "BOOK_VENUES": "binance",
                                     "WS_STALE_AFTER": "600"})
    try:
        wait_for("the replay sent", lambda: sim.status()["replay_finished"], timeout=240)
        wait_for("the last update id in the hash", lambda: r.hget(KEY, "seq_id") == str(naive.last), timeout=60)
        final = hash_book(r, KEY)
        assert final["status"] == "valid"
        # the book keeps the snapshot's 1,000 levels; the hash its top 400: equal to the rebuild's, exact strings
        assert (final["bids"], final["asks"]) == ([[lv.price, lv.size] for lv in bids[:400]],
                                                  [[lv.price, lv.size] for lv in asks[:400]])
        no_resync(col, r)
        assert len(col.events("book_rest_bootstrap")) == 1  # one snapshot: the first update's
        writes = [w for w in watch.writes[KEY] if w.seq_id is not None]
        assert all(w.status == "valid" for w in writes)
        ticker_u = [t.update_id for t in tickers]
        checked: dict[int, bool] = {}
        for w in writes:
            i = bisect_right(ticker_u, w.seq_id) - 1
            if i >= 0:
                t = tickers[i]
                checked[i] = checked.get(i, True) and (w.bid, w.ask) == ((t.bid.price, t.bid.size),
                                                                       (t.ask.price, t.ask.size))
        agree = sum(checked.values())
        print(f"{len(writes)} hash writes, {len(checked)} of {len(tickers)} bookTicker messages checkable, "
              f"{agree} agree ({agree / len(checked):.4%})")
        assert len(checked) > 500
        assert agree / len(checked) > 0.999
        assert col.alive() and not watch.errors
    finally:
        col.stop()
        watch.stop()


@pytest.mark.parametrize(("name", "market", "depth"), [
    ("bybit-2024-12-01-xrpusdt-orderbook500.jsonl", "linear", 500),
    ("bybit-2025-06-13-orderbook1.jsonl", "spot", 1),
    ("bybit-2025-06-13-orderbook1.jsonl", "linear", 1),
])
def test_bybit_recording_through_the_collector(name: str, market: str, depth: int, start_simulator, redis_server,
                                               redis_db, tmp_path: Path) -> None:
    path = DATA / "bybit" / name
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    naive = NaiveBybitBooks()
    for row in rows:
        msg = json.loads(row["data"])
        if "topic" in msg and str(row["source"]).endswith(f"/{market}"):
            naive.frame(msg)
    ids = {s: f"{s[:-4]}-{s[-4:]}" for s in naive.books}  # XRPUSDT -> XRP-USDT, OPUSDC -> OP-USDC
    assert ids

    sim = start_simulator("--replay", str(path), "--speed", "0")
    r = redis_db
    r.sadd("config:trading_pairs", *ids.values())
    url = sim.bybit_linear_ws_url if market == "linear" else sim.bybit_ws_url
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "BOOK_VENUES": "bybit",
                                     "BYBIT_WS_URL": url, "BYBIT_BOOK_DEPTH": str(depth), "WS_STALE_AFTER": "600"})
    try:
        for sym, inst in ids.items():
            key = f"orderbook:bybit:{inst}"
            wait_for(f"{key} at the recording's last u", lambda k=key, s=sym: r.hget(k, "seq_id")
                     == str(naive.last_u[s]), timeout=90)
            final = hash_book(r, key)
            want_bids, want_asks = naive.levels(sym)
            assert final["status"] == "valid"
            assert (final["bids"], final["asks"]) == ([[lv.price, lv.size] for lv in want_bids[:400]],
                                                      [[lv.price, lv.size] for lv in want_asks[:400]]), inst
        no_resync(col, r)
        assert col.alive()
    finally:
        col.stop()
