"""The exchange's own trades (``MARKET_DATA_VENUES=local``): Redis Streams ``trades:{inst}`` -> klines, exactly once.

* the entry parser: the contract's shape -> a Trade; junk -> typed rejections only (hypothesis);
* the source partition on a real Redis: reads every stream in order, a snapshot resumes right after the last
  entry it returned, a repeated ``trade_id`` is dropped and counted, junk is counted and skipped;
* end to end: ``LOCAL_TRADES_N`` trades (default 60,000: the test's cost is the dataflow's processing of them,
  ~2,000 trades/s on a loaded 2-core CI, and a smaller volume shows the same exactly-once; the full 1,000,000:
  ``LOCAL_TRADES_N=1000000 pytest tests/test_local_trades.py -k million``, see benchmarks/RESULTS.md)
  XADDed in pipelined chunks into two streams while
  ``market_data`` runs with Bytewax recovery and is killed with SIGKILL twice during the XADDs -> every
  ``kline:local:*`` hash's latest bar and every closed InfluxDB ``kline`` point (1m, 5m, 1h; each written
  value, so a rewrite after recovery must be identical) equal an independent aggregation of the trades.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.local.source import LocalConfig, LocalTradesSource
from connectors.local.wire import parse_entry, parse_flat
from connectors.market.frames import ParseError
from connectors.market.source import MarketStats
from connectors.redis.pairs import PairsConfig
from cryptoflow.servers import stop_process
from operators.events import Trade, iso_ms
from operators.kline_steps import InstrumentRemoved
from operators.klines import bucket_trades
from operators.trade_ticker import TradeTicker
from tests.fixtures.influx import private_victoria
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC
ENTRY = {b"price": b"60000.10", b"amount": b"0.0150", b"side": b"sell", b"ts": b"1723161600123", b"trade_id": b"42"}
TF_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades")


# ------------------------------------------------------------------------------------------------ parser
def test_the_contract_entry_is_a_trade() -> None:
    assert parse_entry("BTC-USDT", ENTRY, recv_ns=7) == Trade(
        "local", "BTC-USDT", "42", Decimal("60000.10"), Decimal("0.0150"), "sell", 1723161600123, 7)


_value = st.one_of(st.binary(max_size=80), st.sampled_from(
    [b"", b"NaN", b"-1", b"1e999", b"buy", b"sell", b"0", b"\xff", b"12345678901234567890", b"1.5", b"99999999999999"]))


@given(st.dictionaries(st.sampled_from([b"price", b"amount", b"side", b"ts", b"trade_id", b"x"]), _value))
@settings(max_examples=500, deadline=None)
def test_junk_entries_give_only_typed_rejections(fields: dict[bytes, bytes]) -> None:
    out = parse_entry("BTC-USDT", {**ENTRY, **fields} if len(fields) % 2 else fields, recv_ns=0)
    if isinstance(out, ParseError):
        assert out.reason in ("wrong_type", "too_large", "invalid_number", "invalid_value") and out.venue == "local"
    else:  # accepted: then every field is what the contract allows
        assert out.price > 0 and out.size > 0 and out.side in ("buy", "sell") and 0 <= out.ts_ms < 10**13
        assert out.trade_id.isdigit()


@given(st.lists(st.tuples(st.sampled_from([b"price", b"amount", b"side", b"ts", b"trade_id", b"x"]), _value),
                max_size=7), st.booleans())
@settings(max_examples=500, deadline=None)
def test_the_flat_reply_parses_as_its_dict(pairs: list[tuple[bytes, bytes]], canonical: bool) -> None:
    """parse_flat (XREAD's [field, value, ...], no dict on the producers' field order; the Decimal cache) says
    exactly what parse_entry says of the same entry as a dict (the last of a repeated field wins in both)."""
    if canonical:  # the producers' order, values from the draw where it has them
        given_values = dict(pairs)
        pairs = [(k, given_values.get(k, ENTRY[k])) for k in ENTRY]
    flat = [x for kv in pairs for x in kv]
    for _ in range(2):  # twice: the second parse of a price/amount comes from the cache
        assert parse_flat("BTC-USDT", flat, recv_ns=3) == parse_entry("BTC-USDT", dict(pairs), recv_ns=3)


# ------------------------------------------------------------------------------------------------ ticker
@given(st.lists(st.tuples(st.integers(0, 40 * 3_600_000), st.integers(1, 999), st.integers(1, 50)), min_size=1,
                max_size=200), st.integers(1, 20))
@settings(max_examples=200, deadline=None)
def test_ticker_from_trades_is_the_rolling_24h_of_its_minutes(rows: list[tuple[int, int, int]], batch: int) -> None:
    """Trades in time order, fed in batches as the dataflow does (minute buckets per batch); the oracle is a
    plain pass over the raw trades of the minutes that start within 24 h of the newest trade's minute."""
    rows.sort(key=lambda r: r[0])
    trades = [Trade("local", "BTC-USDT", str(i), Decimal(p), Decimal(q), "buy", T0 + ts)
              for i, (ts, p, q) in enumerate(rows)]
    ticker, out = TradeTicker(), None
    for lo in range(0, len(trades), batch):
        for b in bucket_trades(trades[lo:lo + batch]):
            out = ticker.update(b)
    last = trades[-1]
    horizon = last.ts_ms - last.ts_ms % 60_000 - 86_400_000
    window = [t for t in trades if t.ts_ms - t.ts_ms % 60_000 > horizon]
    first = window[0].price
    assert out is not None
    assert (out.price, out.high_24h, out.low_24h, out.volume_24h, out.ts_ms) == (
        last.price, max(t.price for t in window), min(t.price for t in window), sum(t.size for t in window),
        last.ts_ms)
    assert out.change_24h == (last.price - first) * 100 / first and out.bid is None


# ------------------------------------------------------------------------------------------------ source
def _config(url: str, **kw: Any) -> LocalConfig:
    pairs = PairsConfig(url, "config:trading_pairs", 10, 0.05)
    return LocalConfig(pairs, kw.pop("batch", 1000), 2, kw.pop("shards", 1), stats_interval=0.0)


def _drain(part: Any, until: Callable[[list[Any]], bool]) -> list[Any]:
    got: list[Any] = []
    wait_for("source items", lambda: got.extend(part.next_batch()) or until(got), timeout=10, every=0.0)
    return got


def test_source_reads_in_order_resumes_after_its_snapshot_and_drops_repeats(redis_server: Any,
                                                                            redis_db: Any) -> None:
    redis_db.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    for i in range(1, 6):
        redis_db.xadd("trades:BTC-USDT", {**{k.decode(): v for k, v in ENTRY.items()}, "trade_id": str(i)})
    redis_db.xadd("trades:ETH-USDT", {"price": "3000", "amount": "1", "side": "buy", "ts": "5", "trade_id": "9"})
    redis_db.xadd("trades:ETH-USDT", {"price": "junk"})
    src = LocalTradesSource(_config(redis_server.url, batch=2))
    part = src.build_part("local", "local-0", None)

    def trades(items: list[Any]) -> list[tuple[str, str]]:
        return [(t.instrument, t.trade_id) for t in items if isinstance(t, Trade)]

    got = _drain(part, lambda g: len(trades(g)) == 6)
    assert sorted(trades(got)) == [("BTC-USDT", str(i)) for i in range(1, 6)] + [("ETH-USDT", "9")]
    assert [t for t in trades(got) if t[0] == "BTC-USDT"] == [("BTC-USDT", str(i)) for i in range(1, 6)]
    state = part.snapshot()
    part.close()
    # a retried XADD (same trade_id) and two new trades; the resumed partition sees only what follows
    redis_db.xadd("trades:BTC-USDT", {**{k.decode(): v for k, v in ENTRY.items()}, "trade_id": "5"})
    for i in (6, 7):
        redis_db.xadd("trades:BTC-USDT", {**{k.decode(): v for k, v in ENTRY.items()}, "trade_id": str(i)})
    resumed = src.build_part("local", "local-0", state)
    again = _drain(resumed, lambda g: len(trades(g)) == 2 and any(
        isinstance(s, MarketStats) and dict(s.counters).get("local_duplicate_trades") for s in g))
    assert trades(again) == [("BTC-USDT", "6"), ("BTC-USDT", "7")]
    counters = {k: v for s in got if isinstance(s, MarketStats) for k, v in s.counters}
    assert counters["market_data:rejected_wrong_type"] == 1  # the junk entry, counted once, skipped
    redis_db.srem("config:trading_pairs", "ETH-USDT")
    removed = _drain(resumed, lambda g: any(isinstance(x, InstrumentRemoved) for x in g))
    assert [x for x in removed if isinstance(x, InstrumentRemoved)] == [InstrumentRemoved("local", "ETH-USDT")]
    resumed.close()


def test_a_read_ahead_is_not_in_the_snapshot_and_a_pair_removed_meanwhile_keeps_its_position(
        redis_server: Any, redis_db: Any) -> None:
    """A backlog (full batches) sends the next XREAD ahead; its entries are emitted only at the next call, so the
    snapshot taken before that names the last entry emitted, and a pair removed while the read-ahead was out
    skips its entries without moving its position: added back, it goes on right after the last one emitted."""
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    for i in range(1, 11):
        redis_db.xadd("trades:BTC-USDT", {**{k.decode(): v for k, v in ENTRY.items()}, "trade_id": str(i)})
    src = LocalTradesSource(_config(redis_server.url, batch=3))
    part = src.build_part("local", "local-0", None)

    def ids(items: list[Any]) -> list[int]:
        return [int(t.trade_id) for t in items if isinstance(t, Trade)]

    assert ids(part.next_batch()) == [1, 2, 3, 4, 5, 6]  # two full reads: the third was sent ahead
    state = part.snapshot()
    assert state[1] == {"BTC-USDT": 6}
    resumed = src.build_part("local", "local-0", state)  # a restart from that snapshot re-reads 7..
    assert ids(_drain(resumed, lambda g: 10 in ids(g))) == [7, 8, 9, 10]
    resumed.close()
    redis_db.srem("config:trading_pairs", "BTC-USDT")
    time.sleep(0.06)  # past the pairs poll interval: the next call drops the pair, then takes the read-ahead
    out = part.next_batch()
    assert InstrumentRemoved("local", "BTC-USDT") in out and ids(out) == []
    assert part.snapshot() == state
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    assert ids(_drain(part, lambda g: 10 in ids(g))) == [7, 8, 9, 10]
    part.close()


def test_source_with_redis_down_backs_off_and_keeps_its_position() -> None:
    """Redis unreachable: no trades, each failure counted as a reconnect, the next call only after a delay
    (capped at 5 s); the snapshot (the position) stays the one it resumed from."""
    from datetime import UTC, datetime

    from cryptoflow.servers import free_port

    state = ({"BTC-USDT": "5-0"}, {"BTC-USDT": 5})
    part = LocalTradesSource(_config(f"redis://127.0.0.1:{free_port()}/0")).build_part("local", "local-0", state)
    delays = []
    for _ in range(8):
        out = part.next_batch()
        assert not [x for x in out if isinstance(x, Trade)]
        awake = part.next_awake()
        assert awake is not None
        delays.append((awake - datetime.now(UTC)).total_seconds())
    reconnects = [s.reconnects for s in out if isinstance(s, MarketStats)]
    assert reconnects == [8] and part.snapshot() == state and max(delays) <= 5.0
    part.close()

# ------------------------------------------------------------------------------------------ end to end
INSTRUMENTS = ("BTC-USDT", "ETH-USDT")
MINUTES = 125  # 00:00 .. 02:05 of event time: 1h klines close twice, 5m 25 times
LAST = 20  # trades in the final minute (02:05), all in its first seconds: it stays open while the test compares


def generate(n: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """``n`` trades per instrument as stream entries (strings exactly as a producer sends them)."""
    out: dict[str, list[dict[str, str]]] = {}
    for k, inst in enumerate(INSTRUMENTS):
        rng = random.Random(seed + k)
        tick = 6_000_000 if k == 0 else 300_000
        rows = []
        for i in range(n):
            body = i < n - LAST
            ts = T0 + (i * MINUTES * 60_000) // (n - LAST) if body else T0 + MINUTES * 60_000 + (i - n + LAST) * 100
            tick = max(1, tick + rng.randint(-3, 3))
            lots = rng.randint(1, 50_000)
            rows.append({"price": f"{tick // 100}.{tick % 100:02d}", "amount": f"{lots // 10_000}.{lots % 10_000:04d}",
                         "side": rng.choice(("buy", "sell")), "ts": str(ts), "trade_id": str(i + 1)})
        out[inst] = rows
    return out


def oracle(rows: list[dict[str, str]], tf_ms: int) -> dict[int, dict[str, Decimal]]:
    """The klines of ``rows`` (arrival order = event order here) by a plain loop over the raw strings."""
    bars: dict[int, dict[str, Decimal]] = {}
    for r in rows:
        ts, price, qty = int(r["ts"]), Decimal(r["price"]), Decimal(r["amount"])
        start = ts - ts % tf_ms
        b = bars.get(start)
        if b is None:
            bars[start] = {"open": price, "high": price, "low": price, "close": price, "volume": qty,
                           "quote_volume": price * qty, "trades": Decimal(1)}
            continue
        b["high"], b["low"], b["close"] = max(b["high"], price), min(b["low"], price), price
        b["volume"] += qty
        b["quote_volume"] += price * qty
        b["trades"] += 1
    return bars


@pytest.fixture
def flow_runner(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], name: str, store: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bytewax.run", "dataflows.market_data", "-r", str(store), "-s", "1", "-b", "0"]
        full = {**os.environ, "LOG_FORMAT": "json", "TRADING_PAIRS_POLL_INTERVAL": "0.5", "MARKET_DATA_VENUES": "local",
                "KLINE_TIMEFRAMES": "1m,5m,1h", "INFLUX_TOKEN": "t", "INFLUX_FLUSH_INTERVAL": "0.2",
                "PRICE_ALERTS_ENABLED": "false", **env}
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


class Producer(threading.Thread):
    """XADDs every stream's entries in pipelined chunks, both streams interleaved; before passing each of
    ``gates`` (fractions of the total) it waits for the test to have killed the dataflow, so that every kill
    happens while entries are still being added."""

    def __init__(self, url: str, data: dict[str, list[dict[str, str]]], gates: tuple[float, ...],
                 chunk: int = 2_000, gate_timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.client = redis_lib.Redis.from_url(url)
        self.data, self.chunk = data, chunk
        self.total = sum(map(len, data.values()))
        self.gates = [(int(g * self.total), threading.Event()) for g in gates]
        self.sent = 0
        self.gate_timeout = gate_timeout
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = len(next(iter(self.data.values())))
            for lo in range(0, n, self.chunk):
                for at, event in self.gates:
                    if self.sent >= at and not event.wait(self.gate_timeout):
                        raise TimeoutError("the test never released the producer")
                pipe = self.client.pipeline(transaction=False)
                for inst, rows in self.data.items():
                    for row in rows[lo:lo + self.chunk]:
                        pipe.xadd(f"trades:{inst}", row)  # type: ignore[arg-type]
                pipe.execute()
                self.sent += sum(len(rows[lo:lo + self.chunk]) for rows in self.data.values())
        except BaseException as e:  # reported by the test
            self.error = e


def _samples(vm: Any, inst: str, tf: str, field: str) -> dict[int, set[float]]:
    out: dict[int, set[float]] = {}
    sel = f'{{__name__="kline_{field}",exchange="local",symbol="{inst}",timeframe="{tf}"}}'
    for row in vm.export(sel):
        for ts, v in zip(row["timestamps"], row["values"], strict=True):
            out.setdefault(ts, set()).add(v)
    return out


TOTAL = int(os.environ.get("LOCAL_TRADES_N", "60000"))
SLACK = max(1.0, TOTAL / 200_000)  # deadlines grow with the volume (past 200,000)


@pytest.mark.slow
@pytest.mark.timeout(int(600 * SLACK))
def test_one_million_trades_killed_twice_give_exactly_the_independent_klines(
        redis_server: Any, redis_db: Any, flow_runner: Any, tmp_path: Path) -> None:
    per_inst, slack = TOTAL // len(INSTRUMENTS), SLACK
    data = generate(per_inst, seed=16)
    store = tmp_path / "recovery"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], cwd=ROOT, check=True)
    redis_db.sadd("config:trading_pairs", *INSTRUMENTS)
    expected = {(inst, tf): oracle(rows, ms) for inst, rows in data.items() for tf, ms in TF_MS.items()}
    producer = Producer(redis_server.url, data, gates=(0.4, 0.75), gate_timeout=120 * slack)

    def consumed() -> str:
        """How far the dataflow got: the newest minute in the kline hashes (ISO-8601 strings sort as times)."""
        return max(redis_db.hget(f"kline:local:{i}:1m", "open_time") or "" for i in INSTRUMENTS)

    with private_victoria(tmp_path / "vm") as vm:
        env = {"REDIS_URL": redis_server.url, "INFLUX_URL": vm.url}
        proc = flow_runner(env, "run-0", store)
        producer.start()
        for k, (_, gate) in enumerate(producer.gates):
            floor, epoch = consumed(), committed_epoch(store)
            wait_for(f"run {k} aggregating", lambda f=floor: consumed() > f, timeout=60 * slack)
            # and a snapshot of this run's progress is committed: the restart must resume from it, not from 0
            wait_for(f"run {k} snapshotted", lambda e=epoch: committed_epoch(store) > e + 1, timeout=60 * slack)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert producer.is_alive() and not gate.is_set()  # killed during the XADDs
            gate.set()
            proc = flow_runner(env, f"run-{k + 1}", store)
        producer.join(300 * slack)
        assert producer.error is None and producer.sent == producer.total

        def hashes_equal() -> list[str]:
            bad = []
            for (inst, tf), bars in expected.items():
                start = max(bars)
                h = redis_db.hgetall(f"kline:local:{inst}:{tf}")
                want = {f: str(bars[start][f]) for f in FIELDS}
                got = {f: h.get(f) for f in FIELDS}
                if h.get("open_time") != iso_ms(start) or {f: Decimal(v or "NaN") for f, v in got.items()} != {
                        f: Decimal(v) for f, v in want.items()} or (h["complete"], h["source"]) != ("true", "trades"):
                    bad.append(f"{inst} {tf}: {h} != {want} at {iso_ms(start)}")
            for inst, rows in data.items():  # the ticker from trades: all of them are within 24 h
                t = redis_db.hgetall(f"ticker:local:{inst}")
                prices = [Decimal(r["price"]) for r in rows]
                want_t = (prices[-1], max(prices), min(prices), sum(Decimal(r["amount"]) for r in rows))
                got_t = tuple(Decimal(t.get(f) or "NaN") for f in ("price", "high_24h", "low_24h", "volume_24h"))
                if got_t != want_t:
                    bad.append(f"ticker {inst}: {got_t} != {want_t}")
            return bad

        _wait_none_bad("every latest kline equal to the independent one", hashes_equal, timeout=180 * slack)

        def points_equal() -> list[str]:
            bad = []
            for (inst, tf), bars in expected.items():
                end = max(bars)
                closed = {t: b for t, b in bars.items() if t != end}
                for f in FIELDS:
                    got = _samples(vm, inst, tf, f)
                    want = {t: {float(b[f])} for t, b in closed.items()}
                    if end in got:  # the last interval closes about a minute after its trades (by the clock)
                        want[end] = {float(bars[end][f])}
                    # a slow run: minutes after the last trade close flat (every price the last close, no volume)
                    flat = {"open": "close", "high": "close", "low": "close", "close": "close"}
                    for t in (t for t in got if t > end):
                        want[t] = {float(bars[end][flat[f]]) if f in flat else 0.0}
                    if f == "quote_volume":  # 15+ significant digits: VictoriaMetrics stores a block's values as
                        # decimals with one shared exponent, off by up to ~1e-15 relative (which depends on how the
                        # samples were grouped: it varies from run to run); a stored value within 1e-13 of the wanted
                        # one counts as it (a lost or doubled trade moves it by > 1e-9). Rounding both to 4 decimals
                        # failed whenever the two straddled a rounding edge.
                        got = {t: {_close_to(v, want.get(t, set())) for v in vs} for t, vs in got.items()}
                    if got != want:
                        diff = {t: (got.get(t), want.get(t)) for t in set(got) | set(want) if got.get(t) != want.get(t)}
                        bad.append(f"{inst} {tf} {f}: {len(diff)} differ, e.g. {sorted(diff.items())[:2]}")
                complete = _samples(vm, inst, tf, "complete")
                if any(v != {1.0} for v in complete.values()) or not set(closed) <= set(complete):
                    bad.append(f"{inst} {tf}: a point not complete")
            return bad

        _wait_none_bad("every closed kline point equal to the independent one", points_equal, timeout=60 * slack)
    logs = [(tmp_path / f"run-{k}.log").read_text() for k in (1, 2)]
    assert all("local_source_resumed" in log for log in logs)  # both restarts resumed their offsets


def _close_to(value: float, wanted: set[float]) -> float:
    """The wanted value ``value`` stands for (equal within 1e-13 relative), else ``value`` itself."""
    return next((w for w in wanted if math.isclose(value, w, rel_tol=1e-13)), value)


def _wait_none_bad(what: str, check: Callable[[], list[str]], timeout: float) -> None:
    last: list[list[str]] = []
    try:
        wait_for(what, lambda: last.append(check()) or not last[-1], timeout=timeout, every=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}: {last[-1][:6]}") from None


def committed_epoch(store: Path) -> int:
    """The newest epoch whose snapshots Bytewax's recovery store (SQLite) has committed (0: none yet)."""
    with contextlib.closing(sqlite3.connect(f"file:{store / 'part-0.sqlite3'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()
    return int(row[0] or 0)
