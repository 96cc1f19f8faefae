"""Golden test on a real OKX recording (tests/data/okx/okx-2022-05-13-books-trades-tickers.jsonl, see
tests/data/README.md): 290 real `books` frames of three instruments, every checksum verified by the book,
through the dataflow; support/resistance and large orders compared with a naive Decimal recomputation from
the final book."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from statistics import median

import orjson
import redis
from bytewax.testing import TestingSource, run_main

from connectors.okx.books import parse_books_frame
from cryptoflow.settings import load_settings
from dataflows.orderbook_analysis import build
from operators.analysis.params import default_bin_width
from operators.events import BookStatus, Level
from operators.orderbook import OrderBook
from tests.fixtures.redis import RedisServer

RECORDING = Path(__file__).parent / "data" / "okx" / "okx-2022-05-13-books-trades-tickers.jsonl"
INSTS = ("BTC-USDT", "BTC-USD-220527", "UNI-USD-SWAP")


def book_frames() -> list[str]:
    out = []
    for line in RECORDING.read_bytes().splitlines():
        data = orjson.loads(line)["data"]
        if data.startswith('{"arg":{"channel":"books"'):
            out.append(data)
    return out


def naive_bins(levels: tuple[Level, ...], width: Decimal) -> list[tuple[Decimal, Decimal, int]]:
    """(strength, weighted price, bin) of every bin, strongest first, ties to the bin nearest the mid."""
    bins: dict[int, list[Decimal]] = {}
    for lv in levels:
        p, s = Decimal(lv.price), Decimal(lv.size)
        b = int((p / width).to_integral_value(rounding=ROUND_FLOOR))
        acc = bins.setdefault(b, [Decimal(0), Decimal(0)])
        acc[0] += s
        acc[1] += p * s
    return [(s, n / s, b) for b, (s, n) in bins.items()]


def test_recorded_books_analysed_like_a_naive_recomputation(redis_server: RedisServer,
                                                            redis_db: redis.Redis) -> None:
    frames = book_frames()
    assert len(frames) == 290
    run_main(build(load_settings(redis_url=redis_server.url), source=TestingSource(frames, batch_size=20)))
    books = {i: OrderBook(i) for i in INSTS}
    for f in frames:
        parsed = parse_books_frame(f, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            books[d.instrument].apply(d)
    for inst, book in books.items():
        assert book.status is BookStatus.VALID  # every real checksum matched
        view = book.view()
        h = redis_db.hgetall(f"analysis:{inst}")
        assert h["book_status"] == "valid"
        mid = (Decimal(view.bids[0].price) + Decimal(view.asks[0].price)) / 2
        width = Decimal(repr(default_bin_width(float(mid))))
        tick = max(Decimal(1).scaleb(-len(lv.price.partition(".")[2])) for lv in view.bids + view.asks)
        for side, names, sign in ((view.bids, ("support_level_1", "support_level_2"), 1),
                                  (view.asks, ("resistance_level_1", "resistance_level_2"), -1)):
            ranked = sorted(naive_bins(side, width), key=lambda x: (x[0], sign * x[2]), reverse=True)
            for name, (_, price, _) in zip(names, ranked, strict=False):
                assert abs(Decimal(h[name]) - price) <= tick, (inst, name, h[name], price)
        for side, name in ((view.bids, "large_buy_orders"), (view.asks, "large_sell_orders")):
            sizes = [Decimal(lv.size) for lv in side]
            threshold = 5 * median(sizes)
            assert Decimal(h[name]) == sum((s for s in sizes if s >= threshold), Decimal(0)), (inst, name)
