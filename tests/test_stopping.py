"""Clean stops (issue 10): the first SIGINT/SIGTERM ends the sources, flushes the sinks, exits 0, logs one
``stopped`` line; state that is not finished (open kline minutes) stays in the recovery snapshot.

* in process (``run_main``): what end of input does to the kline windows, with and without a stop;
* as real processes (``python -m bytewax.run``, real Redis, the simulator as the exchanges): each of the four
  dataflows stopped by SIGTERM and by SIGINT, its last batch written; with Redis down; ``cryptoflow run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.events import Trade
from operators.kline_steps import KlineOut, aggregate_klines

T0 = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC
WALL = datetime(2100, 1, 1, tzinfo=UTC)  # fixed and ahead: the watermark moves only with the trades, no timer fires


def _trade(tid: int, ts: int, price: str) -> Trade:
    return Trade("binance", "BTC-USDT", str(tid), Decimal(price), Decimal(1), "buy", ts, 0, 1)


def _run_klines(trades: list[Trade], *, stopping: bool, store: Path | None = None) -> list[KlineOut]:
    flow = Dataflow("stop_klines")
    ks = aggregate_klines(op.input("inp", flow, TestingSource(trades)), ("1m",), 0.0, now=lambda: WALL,
                          hold_at_eof=lambda: stopping)
    got: list[KlineOut] = []
    op.output("out", op.map("values", ks.klines, lambda kv: kv[1]), TestingSink(got))
    run_main(flow, recovery_config=None if store is None else RecoveryConfig(str(store)))
    return got


def _closed(got: list[KlineOut]) -> dict[int, tuple[Decimal, Decimal, int]]:
    return {o.kline.open_ms: (o.kline.open, o.kline.close, o.kline.trades) for o in got if o.kline.closed}


FIRST = [_trade(1, T0 + 10_000, "100"), _trade(2, T0 + 20_000, "101")]  # minute T0 is open at the stop


def test_end_of_a_finite_input_closes_the_open_minute() -> None:
    """A replay that is over: end of input is the end of time (Bytewax's EventClock), the minute closes."""
    assert _closed(_run_klines(FIRST, stopping=False)) == {T0: (Decimal(100), Decimal(101), 2)}


def test_a_stop_keeps_the_open_minute_in_the_snapshot_and_a_restart_continues_it(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    got = _run_klines(FIRST, stopping=True, store=tmp_path)
    assert _closed(got) == {}  # no partial kline published as closed
    assert [(o.kline.open_ms, o.kline.trades) for o in got][-1] == (T0, 2)  # the updating kline was written
    # restarted on the same store (TestingSource resumes after the 2 trades it gave): the open minute goes on
    more = [*FIRST, _trade(3, T0 + 50_000, "99"), _trade(4, T0 + 61_000, "98")]
    got = _run_klines(more, stopping=True, store=tmp_path)
    assert _closed(got) == {T0: (Decimal(100), Decimal(99), 3)}  # both runs' trades in one kline


def test_a_stop_still_closes_the_minutes_whose_time_passed(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    trades = [*FIRST, _trade(3, T0 + 61_000, "98")]  # minute T0 closed by the data, T0+1m open at the stop
    got = _run_klines(trades, stopping=True, store=tmp_path)
    assert _closed(got) == {T0: (Decimal(100), Decimal(101), 2)}
