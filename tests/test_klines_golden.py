"""Golden test: Binance recordings replayed through the kline steps give Binance's own klines.

* 2021 files (aggTrade + kline_1m): every Binance kline frame whose trade-id range ``[f, L]`` is entirely in
  the recording is compared with the pipeline's kline over the recorded trades up to trade ``L`` (open,
  high, low, close, volume, quote volume, trade count).
* 2024 ETHUSDT (``trade`` stream, 11 minutes across UTC midnight, no venue klines): the 10 complete minutes
  and the two complete 5-minute intervals equal values computed here independently; 1h/1d equal the
  aggregate of the trades they saw.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.binance.market import parse_binance_frame
from connectors.market.frames import symbol_map
from operators.events import Kline, Trade
from operators.kline_steps import KlineOut, aggregate_klines

DATA = Path(__file__).parent / "data" / "binance"
TFS = ("1m", "5m", "1h", "1d")


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:  # type: ignore[operator]
        return [line for line in f if line.strip()]


REPLAY_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _parse(lines: list[str], symbols: dict[str, str]) -> list[Trade | Kline]:
    out: list[Trade | Kline] = []
    for line in lines:
        rec = json.loads(line)
        for item in parse_binance_frame(rec["data"], recv_ns=int(rec["ts"] * 1e9), symbols=symbols):
            assert isinstance(item, Trade | Kline), item
            out.append(item)
    return out


def replay_now() -> datetime:
    """The system time of an in-process replay: it stands still, so the watermark follows the trades alone.
    With the real clock, a replay slowed past the 2 s lateness (a loaded machine, batch size 1) turns the rest
    of a minute's trades late: the output would depend on the machine's speed."""
    return REPLAY_AT


def run_klines(trades: list[Trade], timeframes: tuple[str, ...] = TFS, batch_size: int = 100) -> list[KlineOut]:
    flow = Dataflow("golden")
    stream = op.input("inp", flow, TestingSource(trades, batch_size=batch_size))
    ks = aggregate_klines(stream, timeframes, 2.0, now=replay_now)
    got: list[KlineOut] = []
    op.output("out", op.map("strip", ks.klines, lambda kv: kv[1]), TestingSink(got))
    run_main(flow)
    return got


def settled(klines: dict[tuple[Any, ...], Kline], trades: list[Trade]) -> dict[tuple[Any, ...], Kline]:
    """The klines that end before the minute of the last trade. After it, the flat-minute timer decides: it runs
    on the wall clock (``notify_at``), so in a replay how many empty minutes it closes before the end of input,
    and so whether the longer intervals holding the last trade close, depends on the machine's speed."""
    last_minute = max(t.ts_ms for t in trades) // 60_000 * 60_000
    return {key: k for key, k in klines.items() if k.close_ms <= last_minute}


def closed(outs: list[KlineOut], tf: str) -> dict[tuple[str, int], KlineOut]:
    return {(o.kline.instrument, o.kline.open_ms): o for o in outs if o.kline.closed and o.kline.timeframe == tf}


# How many venue kline frames each recording lets us compare: those whose every trade (ids ``f..L``) is in the
# recording. Counted from the files: FTMUSDT and SXPBTC at 14:47 UTC on 2021-08-14 (the 14:46 ones started
# before the recording), LRCBTC at 00:28 UTC on 2021-10-12 (NKNUSDT's started before).
VENUE_KLINES = {"binance-2021-08-14-aggtrade-kline.jsonl": 2, "binance-2021-10-12-aggtrade-kline.jsonl": 1}


def _raw_kline(aggs: list[dict[str, Any]]) -> tuple[Decimal | int, ...]:
    """OHLCV, quote volume and trade count of raw aggTrade records, written out longhand (no production code)."""
    ordered = sorted(aggs, key=lambda a: (a["T"], a["a"]))
    prices = [Decimal(a["p"]) for a in ordered]
    volume = sum((Decimal(a["q"]) for a in ordered), Decimal(0))
    quote = sum((Decimal(a["p"]) * Decimal(a["q"]) for a in ordered), Decimal(0))
    count = sum(a["l"] - a["f"] + 1 for a in ordered)
    return prices[0], max(prices), min(prices), prices[-1], volume, quote.quantize(Decimal("1e-8")), count


@pytest.mark.parametrize("name", sorted(VENUE_KLINES))
def test_venue_klines_equal_pipeline_klines(name: str) -> None:
    lines = _lines(DATA / name)
    raw = [json.loads(json.loads(line)["data"])["data"] for line in lines]
    symbols = symbol_map(f"{d['s'][:-4]}-{d['s'][-4:]}" if d["s"].endswith("USDT") else f"{d['s'][:-3]}-{d['s'][-3:]}"
                         for d in raw)
    items = _parse(lines, symbols)
    covered: dict[str, set[int]] = defaultdict(set)
    for d in raw:
        if d["e"] == "aggTrade":
            covered[d["s"]].update(range(d["f"], d["l"] + 1))
    compared = 0
    for d, item in zip(raw, items, strict=True):
        if d["e"] != "kline":
            continue
        k = d["k"]
        if not set(range(k["f"], k["L"] + 1)) <= covered[d["s"]]:
            continue  # trades of this minute before the recording started
        assert isinstance(item, Kline) and item.source == "venue"
        # The independent oracle: the raw aggTrades of this kline (by trade id) aggregated here, which must be
        # exactly the trades f..L and give the venue's own numbers.
        mine = [a for a in raw if a["e"] == "aggTrade" and a["s"] == d["s"] and k["f"] <= a["f"] and a["l"] <= k["L"]]
        assert sorted(i for a in mine for i in range(a["f"], a["l"] + 1)) == list(range(k["f"], k["L"] + 1))
        assert all(k["t"] <= a["T"] <= k["T"] for a in mine)
        oracle = _raw_kline(mine)
        assert oracle == (Decimal(k["o"]), Decimal(k["h"]), Decimal(k["l"]), Decimal(k["c"]), Decimal(k["v"]),
                          Decimal(k["q"]), k["n"])
        # The pipeline, fed every recorded trade of the symbol up to the kline's last one (earlier minutes too).
        upto = [t for t, r in zip(items, raw, strict=True)
                if isinstance(t, Trade) and r["s"] == d["s"] and r["l"] <= k["L"]]
        ours = closed(run_klines(upto, ("1m",)), "1m")[(item.instrument, item.open_ms)].kline
        assert (ours.open, ours.high, ours.low, ours.close, ours.volume, ours.quote_volume.quantize(Decimal("1e-8")),
                ours.trades) == oracle, (ours, oracle)
        assert (ours.open, ours.high, ours.low, ours.close, ours.volume, ours.trades) == (
            item.open, item.high, item.low, item.close, item.volume, item.trades), (ours, item)
        assert ours.quote_volume.quantize(Decimal("1e-8")) == item.quote_volume
        assert (ours.open_ms, ours.close_ms) == (item.open_ms, item.close_ms) == (k["t"], k["T"] + 1)
        compared += 1
    assert compared == VENUE_KLINES[name]


def _naive(trades: list[tuple[int, Decimal, Decimal]]) -> tuple[Decimal, ...]:
    """OHLCV of trades sorted by (time, id), written out longhand."""
    prices = [p for _, p, _ in trades]
    vol = sum((q for _, _, q in trades), Decimal(0))
    quote = sum((p * q for _, p, q in trades), Decimal(0))
    return (prices[0], max(prices), min(prices), prices[-1], vol, quote, Decimal(len(trades)))


def test_ethusdt_eleven_minutes() -> None:
    lines = _lines(DATA / "binance-2024-08-08-ethusdt-trade.jsonl.gz")
    raw = [json.loads(json.loads(line)["data"])["data"] for line in lines]
    by_id = sorted((d["t"], d["T"], Decimal(d["p"]), Decimal(d["q"])) for d in raw)
    assert by_id[-1][0] - by_id[0][0] + 1 == len(by_id)  # no trade missing from the recording
    first_ms, last_ms = by_id[0][1], by_id[-1][1]
    naive: dict[tuple[int, int], list[tuple[int, Decimal, Decimal]]] = defaultdict(list)
    for _, ts, p, q in by_id:
        for tf_ms in (60_000, 300_000, 3_600_000, 86_400_000):
            naive[(tf_ms, ts - ts % tf_ms)].append((ts, p, q))

    trades = [t for t in _parse(lines, {"ETHUSDT": "ETH-USDT"}) if isinstance(t, Trade)]
    outs = run_klines(trades)
    minutes = closed(outs, "1m")
    complete = [o for o in minutes.values() if o.kline.open_ms >= first_ms and o.kline.close_ms <= last_ms]
    assert len(complete) == 10
    for o in complete:
        k = o.kline
        assert o.complete
        assert (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, Decimal(k.trades)) == _naive(
            naive[(60_000, k.open_ms)])
        assert k.close_ms - k.open_ms == 60_000 and k.open_ms % 60_000 == 0
    # the minute the recording starts in is partial: never claimed complete (not reconciled)
    assert not minutes[("ETH-USDT", first_ms - first_ms % 60_000)].complete

    fives = [o for o in closed(outs, "5m").values() if o.kline.open_ms >= first_ms and o.kline.close_ms <= last_ms]
    assert [o.kline.open_ms for o in fives] == [1723161300000, 1723161600000]  # 23:55 and 00:00 UTC
    for o in fives:
        k = o.kline
        assert o.complete
        assert (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, Decimal(k.trades)) == _naive(
            naive[(300_000, k.open_ms)])
    for tf, tf_ms in (("1h", 3_600_000), ("1d", 86_400_000)):
        # split at midnight UTC: 23:54-00:00 closed when its last minute closed; 00:00-00:05 still open at the
        # end, its latest updating kline has every trade since midnight
        (before,) = closed(outs, tf).values()
        after = [o for o in outs if o.kline.timeframe == tf and o.kline.open_ms == 1723161600000]
        assert after and not any(o.kline.closed for o in after)
        for k in (before.kline, after[-1].kline):
            assert (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, Decimal(k.trades)) == _naive(
                naive[(tf_ms, k.open_ms)])
        assert before.kline.open_ms == 1723161600000 - tf_ms and not before.complete
    # updating klines were emitted along the way, never claiming to be closed
    assert any(not o.kline.closed and o.kline.timeframe == "1d" for o in outs)


def test_batch_size_does_not_change_closed_klines() -> None:
    lines = _lines(DATA / "binance-2024-08-08-ethusdt-trade.jsonl.gz")[:3000]
    trades = [t for t in _parse(lines, {"ETHUSDT": "ETH-USDT"}) if isinstance(t, Trade)]
    a = settled({k: o.kline for k, o in closed(run_klines(trades, batch_size=1), "1m").items()}, trades)
    b = settled({k: o.kline for k, o in closed(run_klines(trades, batch_size=1000), "1m").items()}, trades)
    assert a == b and len(a) >= 2
