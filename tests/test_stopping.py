"""Clean stops (issue 10): the first SIGINT/SIGTERM ends the sources, flushes the sinks, exits 0, logs one
``stopped`` line; state that is not finished (open kline minutes) stays in the recovery snapshot.

* in process (``run_main``): what end of input does to the kline windows, with and without a stop;
* as real processes (``python -m bytewax.run``, real Redis, the simulator as the exchanges): each of the four
  dataflows stopped by SIGTERM and by SIGINT, its last batch written; with Redis down; ``cryptoflow run``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import pytest
import redis
from aiosmtpd.controller import Controller
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from cryptoflow.servers import free_port, stop_process
from operators.events import Trade, iso_ms
from operators.kline_steps import KlineOut, aggregate_klines
from tests.book_helpers import NaiveBook, delta
from tests.fixtures.influx import VictoriaMetrics
from tests.fixtures.redis import RedisServer
from tests.okx_frames import SyntheticOkxBook
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]

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


# ------------------------------------------------------------------------------------------ real processes
class Flow:
    """One ``python -m bytewax.run dataflows.NAME`` process; its stdout and stderr go to ``log``."""

    def __init__(self, name: str, env: dict[str, str], log: Path, args: tuple[str, ...] = ()) -> None:
        full = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                "RUST_BACKTRACE": "1", "TRADING_PAIRS_POLL_INTERVAL": "0.5", **env}
        if "INFLUX_URL" not in env:
            full.pop("INFLUX_URL", None)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", f"dataflows.{name}", *args], cwd=ROOT,
                                         env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if f'"{name}"' in line and line.startswith("{"):
                obj = json.loads(line)
                if obj.get("event") == name:
                    out.append(obj)
        return out

    def stop_with(self, sig: int) -> None:
        """One signal to the process, as ``kill -TERM pid`` / Ctrl-C would send; asserts a clean stop."""
        self.proc.send_signal(sig)
        self.expect_clean_stop(sig)

    def expect_clean_stop(self, sig: int) -> None:
        """Exit 0, no panic, no traceback, one ``stopped`` line naming the signal."""
        rc = self.proc.wait(60)
        text = self.text()
        assert rc == 0, text[-4000:]
        assert "panicked" not in text and "Traceback" not in text, text[-4000:]
        stopped = self.events("stopped")
        assert len(stopped) == 1 and stopped[0]["signal"] == signal.Signals(sig).name, stopped


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Callable[..., Flow]]:
    started: list[Flow] = []

    def start(name: str, env: dict[str, str], *args: str) -> Flow:
        flow = Flow(name, env, tmp_path / f"{name}-{len(started)}.log", args)
        started.append(flow)
        return flow

    yield start
    for flow in started:
        stop_process(flow.proc)


def _store(path: Path) -> tuple[str, ...]:
    """A recovery store whose snapshots are 10 minutes apart: only the one a clean stop commits counts."""
    path.mkdir()
    init_db_dir(path, 1)
    return ("-r", str(path), "-s", "600", "-b", "0")


def _url(server: RedisServer, db: int) -> str:
    return f"{server.url.rsplit('/', 1)[0]}/{db}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_collector_stops_cleanly_with_its_last_batch_written(sig: int, start_simulator: Any, flows: Any,
                                                             redis_server: RedisServer, redis_db: redis.Redis,
                                                             victoria: VictoriaMetrics) -> None:
    inst = "BTC-USDT" if sig == signal.SIGTERM else "ETH-USDT"
    sim = start_simulator("--pairs", inst, "--seed", "3", "--rate", "20")
    redis_db.sadd("config:trading_pairs", inst)
    started_ms = int(datetime.now(UTC).timestamp() * 1000)
    flow = flows("orderbook_collector", {**sim.env(), "REDIS_URL": redis_server.url, "INFLUX_URL": victoria.url,
                                         "INFLUX_TOKEN": "t"})

    def points() -> dict[int, float]:
        got = victoria.series("orderbook_data", "price", instrument_id=inst, side="buy", depth_level="1")
        return {ts: v for ts, v in got.items() if ts >= started_ms}

    wait_for("a valid book in Redis", lambda: redis_db.hget(f"orderbook:{inst}", "status") == "valid")
    wait_for("a few frames in the buffer list", lambda: redis_db.llen("okex_orderbook") >= 5)
    flow.stop_with(sig)
    # the last batch reached both Redis outputs: the hash is the book that the buffer list's frames build, up to
    # its newest frame (rebuilt by the tests' own naive book, not the collector's)
    frames = [json.loads(f) for f in reversed(redis_db.lrange("okex_orderbook", 0, -1))]
    naive = NaiveBook()
    for frame in frames:
        for d in frame["data"]:
            naive.apply(delta([lv[:2] for lv in d["bids"]], [lv[:2] for lv in d["asks"]], action=frame["action"],
                              seq=d.get("seqId"), prev=d.get("prevSeqId"), checksum=d.get("checksum", 0)))
    assert frames[0]["action"] == "snapshot" and naive.status == "valid"
    book = redis_db.hgetall(f"orderbook:{inst}")
    assert book["status"] == "valid" and book["seq_id"] == str(frames[-1]["data"][-1]["seqId"])
    assert [tuple(lv) for lv in json.loads(book["bids"])] == naive.sorted_bids()
    assert [tuple(lv) for lv in json.loads(book["asks"])] == naive.sorted_asks()
    # and the InfluxDB sink was closed (flushed) normally: the book samples of this run are there. (This failed
    # now and then on loaded runs with the series empty: the fixture's export ended at VictoriaMetrics' current
    # whole second, hiding a sample written in the last second, i.e. at the stop; it now reads to the far future.)
    assert points(), (started_ms, victoria.series("orderbook_data", "price", instrument_id=inst, side="buy",
                                                  depth_level="1"), flow.text()[-4000:])


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_analysis_stops_cleanly_and_resumes_from_the_final_snapshot(sig: int, flows: Any, tmp_path: Path,
                                                                    redis_server: RedisServer,
                                                                    redis_db: redis.Redis) -> None:
    inst = "BTC-USDT"
    book = SyntheticOkxBook(inst, depth=50, seed=5)
    t0 = 1_700_000_000_000
    args = _store(tmp_path / "recovery")
    env = {"REDIS_URL": redis_server.url}
    first = flows("orderbook_analysis", env, *args)
    redis_db.lpush("okex_orderbook", book.snapshot(t0), *(book.update(t0 + 100 * i) for i in range(1, 6)))

    def analysed_at(ts_ms: int) -> bool:
        return redis_db.hget(f"analysis:{inst}", "analysis_time") == iso_ms(ts_ms)

    wait_for("the last frame analysed", lambda: analysed_at(t0 + 500))
    first.stop_with(sig)
    assert redis_db.llen("okex_orderbook") == 0
    # restarted: the book (and the windows) come from the snapshot the stop committed, 10 min before the next
    # periodic one; the next frame chains onto it: no redelivery, no resync
    second = flows("orderbook_analysis", env, *args)
    redis_db.lpush("okex_orderbook", book.update(t0 + 600))
    wait_for("the next frame analysed on the resumed book", lambda: analysed_at(t0 + 600))
    assert redis_db.hget(f"analysis:{inst}", "book_status") == "valid"
    text = second.text()
    assert "redis_list_redeliver" not in text and "resync" not in text, text[-3000:]


# A Binance ``trade`` replay in the simulator's recording format; T1 is an hour no other test uses.
T1 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def _binance_trades(path: Path, rows: list[tuple[int, int, str]]) -> Path:
    lines = []
    for tid, ts, price in rows:
        frame = {"stream": "btcusdt@trade", "data": {"e": "trade", "E": ts, "s": "BTCUSDT", "t": tid, "p": price,
                                                     "q": "1", "T": ts, "m": False, "M": True}}
        lines.append(json.dumps({"ts": ts / 1000, "source": "wss://stream.binance.com:9443/stream",
                                 "data": json.dumps(frame)}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_market_data_stop_keeps_the_open_minute_for_the_next_start(sig: int, start_simulator: Any, flows: Any,
                                                                   tmp_path: Path, redis_server: RedisServer,
                                                                   victoria: VictoriaMetrics) -> None:
    db = 6 if sig == signal.SIGTERM else 7
    r = redis.Redis.from_url(_url(redis_server, db), decode_responses=True)
    r.flushdb()
    r.sadd("config:trading_pairs", "BTC-USDT")
    t1 = T1 if sig == signal.SIGTERM else T1 + 3_600_000  # the two runs write apart in the shared InfluxDB
    before = [(1, t1 + 1_000, "100"), (2, t1 + 2_000, "101")]  # minute t1 is open (58 s of event time left)
    after = [*before, (3, t1 + 3_000, "99"), (4, t1 + 61_000, "98")]  # resent + one more, then t1 + 1m closes t1
    env = {"REDIS_URL": _url(redis_server, db), "MARKET_DATA_VENUES": "binance", "BINANCE_TRADE_STREAM": "trade",
           "KLINE_TIMEFRAMES": "1m", "PRICE_ALERTS_ENABLED": "false", "INFLUX_URL": victoria.url,
           "INFLUX_TOKEN": "t"}
    args = _store(tmp_path / "recovery")

    def closed_trades() -> dict[int, float]:
        return victoria.series("kline", "trades", exchange="binance", symbol="BTC-USDT", timeframe="1m")

    def minute() -> dict[str, str]:
        return r.hgetall("kline:binance:BTC-USDT:1m")

    sim = start_simulator("--replay", str(_binance_trades(tmp_path / "before.jsonl", before)), "--speed", "0")
    first = flows("market_data", {**env, **sim.env()}, *args)
    wait_for("the open minute in Redis", lambda: minute().get("trades") == "2")
    first.stop_with(sig)
    assert minute()["closed"] == "false"
    assert t1 not in closed_trades()  # no partial kline published as closed
    sim.stop()

    sim = start_simulator("--replay", str(_binance_trades(tmp_path / "after.jsonl", after)), "--speed", "0")
    second = flows("market_data", {**env, **sim.env()}, *args)
    wait_for("minute t1 closed", lambda: t1 in closed_trades())
    assert closed_trades()[t1] == 3  # the two trades before the stop and the one after, counted once each
    assert "kline_late_trades" not in r.hgetall("system:monitoring")
    assert "market_source_resumed" in second.text()
    r.close()


class _GatedInbox:
    """An SMTP server's message handler that holds each DATA until ``gate`` opens (``entered`` says one came)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.jobs: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.entered.set()
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 60)
        self.jobs.append(str(message_from_bytes(envelope.original_content or envelope.content)["X-Cryptoflow-Job"]))
        return "250 Message accepted for delivery"


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_email_sender_delivers_the_email_in_flight_then_stops(sig: int, flows: Any, redis_server: RedisServer,
                                                              redis_db: redis.Redis) -> None:
    inbox = _GatedInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        flow = flows("email_sender", {"REDIS_URL": redis_server.url, "SMTP_HOST": "127.0.0.1",
                                      "SMTP_PORT": str(port), "SMTP_TIMEOUT": "30"})
        redis_db.lpush("queue:email", orjson.dumps({
            "id": "job-stop", "alert_id": "alert-stop", "to": "ops@example.com", "subject": "Price alert",
            "body": "BTC-USDT rose above 36000\n", "created_at": "2026-11-21T09:00:00.000Z", "attempts": 0}))
        wait_for("the email in the SMTP conversation", inbox.entered.is_set)
        flow.proc.send_signal(sig)  # the stop arrives while the server has not accepted the email yet
        inbox.gate.set()
        flow.expect_clean_stop(sig)
    finally:
        inbox.gate.set()
        controller.stop()
    assert inbox.jobs == ["job-stop"]  # delivered once, acked: nothing left to send again at the next start
    assert redis_db.llen("queue:email") == 0 and redis_db.llen("queue:email:processing:0") == 0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "sig", "running"), [
    ("orderbook_collector", signal.SIGTERM, "pairs_poll_failed"),
    ("market_data", signal.SIGINT, "pairs_poll_failed"),
    ("orderbook_analysis", signal.SIGTERM, "redis_list_unavailable"),
    ("email_sender", signal.SIGINT, "redis_list_unavailable"),
])
def test_redis_down_a_signal_still_stops_cleanly(name: str, sig: int, running: str, flows: Any,
                                                 start_simulator: Any) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--rate", "20")
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    flow = flows(name, {**sim.env(), "REDIS_URL": down, "PRICE_ALERTS_ENABLED": "true"})
    wait_for(f"{name} running without Redis", lambda: flow.events(running))
    flow.stop_with(sig)


def _two_free_ports() -> int:
    """A port ``p`` with ``p + 1`` free as well (``cryptoflow run`` numbers the cluster's ports from it)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.mark.slow
def test_cryptoflow_run_forwards_the_signal_and_returns_0(tmp_path: Path, redis_server: RedisServer) -> None:
    """A two-process cluster under ``cryptoflow run``: one SIGTERM to ``run`` stops both members cleanly."""
    spec = tmp_path / "bytewax.yaml"
    spec.write_text(f"""dataflows:
  email_sender:
    module: dataflows.email_sender
    processes: 2
    base_port: {_two_free_ports()}
""")
    log = tmp_path / "run.log"
    env = {**os.environ, "REDIS_URL": redis_server.url, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
           "PYTHONUNBUFFERED": "1", "RUST_BACKTRACE": "1", "SMTP_PORT": str(free_port())}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cryptoflow.cli", "run", "email_sender", "--file", str(spec)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("both members running", lambda: log.read_text().count('"event":"starting"') == 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-4000:]
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "panicked" not in text and "Traceback" not in text, text[-4000:]
    assert text.count('"event":"stopped"') == 2
