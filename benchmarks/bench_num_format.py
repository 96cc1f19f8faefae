"""What dropping the ``lru_cache`` on ``connectors.redis.market_sink._num`` costs (issue 10, exact strings).

The cache was keyed on Decimal equality, so ``60000.7`` (OKX) and ``60000.70000000`` (Binance) shared one
string: it was wrong, and this measures what it saved. Per call of ``_num`` and per kline/ticker hash built
(``kline_fields``, ``ticker_fields``), plain ``format(d, "f")`` against the old cached function, on prices of
a moving market (2,001 distinct prices in two venues' spellings, so the cache hits most of the time, as it
did live), interleaved rounds in one process, timed in CPU time of the thread (the machine is shared).

Run: ``.venv/bin/python benchmarks/bench_num_format.py [--rounds 7]``
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import connectors.redis.market_sink as ms
from operators.events import Kline, Ticker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(1)
    ticks = [600_000 + rng.randint(-1000, 1000) for _ in range(args.n)]
    values = [Decimal(f"{t // 10}.{t % 10}") if i % 2 else Decimal(f"{t // 10}.{t % 10}0000000")
              for i, t in enumerate(ticks)]
    klines = [Kline("okx", "BTC-USDT", "1m", 0, 60_000, v, v, v, v, Decimal("12.5"), Decimal("750000.1"), 3, False)
              for v in values[: args.n // 10]]
    tickers = [Ticker("okx", "BTC-USDT", v, v, v, Decimal("1234.5"), Decimal("1.6960"), v, v, 0)
               for v in values[: args.n // 10]]
    exact = ms._num
    cached = functools.lru_cache(maxsize=8192)(exact)
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for label, fn in (("format (now)", exact), ("lru_cache (before)", cached)):
            ms._num = fn  # ticker_fields / kline_fields look _num up at call time
            t = time.thread_time()
            for v in values:
                fn(v)
            per_num = (time.thread_time() - t) / len(values) * 1e9
            t = time.thread_time()
            for k in klines:
                ms.kline_fields(k)
            per_kline = (time.thread_time() - t) / len(klines) * 1e6
            t = time.thread_time()
            for tk in tickers:
                ms.ticker_fields(tk)
            per_ticker = (time.thread_time() - t) / len(tickers) * 1e6
            for name, x in (("num", per_num), ("kline", per_kline), ("ticker", per_ticker)):
                results.setdefault(f"{label}|{name}", []).append(x)
    ms._num = exact
    for name, unit in (("num", "ns per _num call"), ("kline", "us per kline_fields"),
                       ("ticker", "us per ticker_fields")):
        now = statistics.median(results[f"format (now)|{name}"])
        before = statistics.median(results[f"lru_cache (before)|{name}"])
        print(f"{unit:>22}: before (lru_cache) {before:8.3f}, now (format) {now:8.3f}, ratio now/before "
              f"{now / before:.2f}")


if __name__ == "__main__":
    main()
