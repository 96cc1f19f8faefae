"""The simulator process: command line, one aiohttp application serving every venue by path on one loopback
port, the ``/control`` endpoint, the one JSON line of URLs on stdout, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from cryptoflow.logs import configure_logging, get_logger
from operators.instruments import InvalidInstrument, validate_instrument
from simulator import okx_rest
from simulator.binance import BinanceVenue
from simulator.bybit import BybitVenue
from simulator.engine import Engine
from simulator.faults import FaultError, parse_spec
from simulator.kline_history import KlineHistory
from simulator.klines_rest import KlinesRest
from simulator.okx import OkxVenue
from simulator.replay import load_recordings
from simulator.rest_limits import add_arguments as add_rest_limit_arguments
from simulator.rest_limits import from_args as rest_limits_from_args

log = get_logger("simulator")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulator", description="OKX, Binance and Bybit on one loopback port: "
                                "a seeded synthetic market and/or recorded sessions, with faults on demand.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    p.add_argument("--pairs", default=None, help="synthetic instruments, comma separated "
                   "(default BTC-USDT,ETH-USDT without --replay, none with it)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic market (default 1)")
    p.add_argument("--rate", type=float, default=10.0, help="book updates per second per instrument (default 10)")
    p.add_argument("--checksum", choices=("real", "zero"), default="real",
                   help="OKX book checksum: real CRC32, or 0 like OKX since 2026-06-23 (default real)")
    p.add_argument("--no-snapshot", action="store_true", help="no initial OKX WebSocket snapshot (use REST)")
    p.add_argument("--replay", nargs="+", default=[], metavar="FILE", help="recordings (.jsonl, .jsonl.gz)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor; 0 = as fast as read (default 1)")
    p.add_argument("--faults", action="append", default=[], metavar="SPEC",
                   help='faults to inject, e.g. "gap@3,inst=BTC-USDT;drop_connection@5" (see simulator/faults.py)')
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="OKX closes connections without subscription or traffic after this many s (default 30)")
    p.add_argument("--binance-ping-interval", type=float, default=20.0,
                   help="seconds between Binance server ping frames (default 20)")
    p.add_argument("--pregenerate", type=int, default=0, metavar="N",
                   help="serve books from a precomputed cycle of 2N steps per pair (fast, books only, no trades; "
                   "for throughput benchmarks; default 0 = off)")
    add_rest_limit_arguments(p)
    p.add_argument("--log-level", default="INFO")
    return p


def build_app(args: argparse.Namespace) -> tuple[web.Application, Engine]:
    recordings = load_recordings(args.replay)
    raw_pairs = args.pairs if args.pairs is not None else ("" if args.replay else "BTC-USDT,ETH-USDT")
    pairs = [validate_instrument(p.strip()) for p in raw_pairs.split(",") if p.strip()]
    engine = Engine(pairs, args.seed, args.rate, recordings, args.pregenerate)
    okx = OkxVenue(engine, args.speed, checksum=args.checksum == "real", snapshot=not args.no_snapshot,
                   idle_timeout=args.idle_timeout)
    binance = BinanceVenue(engine, args.speed, ping_interval=args.binance_ping_interval)
    bybit = BybitVenue(engine, args.speed)
    for venue in (okx, binance, bybit):
        engine.add_venue(venue)
    history = KlineHistory(engine.markets, args.seed)
    engine.add_venue(history)  # sees every step (the trades of each closed minute); serves no socket
    engine.warm_cycles()
    app = web.Application()
    limits = rest_limits_from_args(args)
    binance.depth_rest.limiter = limits.venues["binance"]  # one Binance weight budget: depth and klines
    app.add_routes(KlinesRest(history, engine.specs, limits).routes())
    app.add_routes([
        web.get("/ws/v5/public", okx.serve), web.get("/ws/v5/business", okx.serve),
        web.get("/api/v5/market/books", partial(okx_rest.books, okx)),
        web.get("/api/v5/public/instruments", partial(okx_rest.instruments, okx)),
        web.get("/stream", binance.serve), web.get("/ws", binance.serve), web.get("/ws/{stream}", binance.serve),
        web.get("/api/v3/depth", binance.rest_depth), web.get("/api/v1/depth", binance.rest_depth),
        web.get("/v5/public/{kind}", bybit.serve),
        web.post("/control/fault", _control(engine, "fault")), web.get("/control/book", _control(engine, "book")),
        web.post("/control/pause", _control(engine, "pause")), web.post("/control/resume", _control(engine, "resume")),
        web.get("/control/status", _control(engine, "status")),
    ])
    return app, engine


def _control(engine: Engine, action: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json() if request.can_read_body else {}
            if action == "fault":
                out: Any = engine.apply_fault(dict(body))
            elif action == "book":
                venue, inst = request.query.get("venue", "okx"), request.query.get("inst", "")
                if venue not in engine.venues or inst not in engine.markets:
                    msg = f"book needs venue in {sorted(engine.venues)} and inst in {sorted(engine.markets)}"
                    raise FaultError(msg)
                out = engine.venues[venue].book(inst)
            elif action == "pause":
                engine.pause()
                out = {"paused": True}
            elif action == "resume":
                engine.resume()
                out = {"paused": False}
            else:
                out = status(engine)
        except (FaultError, ValueError, TypeError, KeyError) as err:
            return web.Response(status=400, body=orjson.dumps({"error": str(err)}), content_type="application/json")
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    return handle


def status(engine: Engine) -> dict[str, Any]:
    subs = engine.subs()
    open_replays = [s for s in subs if s.replay]
    return {
        "paused": engine.paused, "steps": engine.steps, "connections": len(engine.all_conns()),
        # every open replay subscription has sent its last frame, and at least one replay has ever finished
        "replay_finished": engine.replays_finished > 0 and all(s.done for s in open_replays),
        "subscriptions": [s.describe() for s in subs], "faults": engine.faults.history[-50:],
        "pending_faults": engine.faults.queued(),
        "connection_details": [{"venue": c.venue, "conn": c.conn_id, "path": c.path, "pongs": c.pongs,
                                "subscriptions": len(c.subs)} for c in engine.all_conns()],
    }


async def serve(args: argparse.Namespace) -> None:
    app, engine = build_app(args)
    for spec in args.faults:
        engine.schedule_faults(parse_spec(spec))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the URL line: a script may signal right after reading it
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = int(runner.addresses[0][1])
    base = f"{args.host}:{port}"
    urls = {
        "port": port, "okx_ws_url": f"ws://{base}/ws/v5/public", "okx_ws_business_url": f"ws://{base}/ws/v5/business",
        "okx_rest_url": f"http://{base}", "binance_ws_url": f"ws://{base}", "binance_rest_url": f"http://{base}",
        "bybit_ws_url": f"ws://{base}/v5/public/spot", "bybit_linear_ws_url": f"ws://{base}/v5/public/linear",
        "control_url": f"http://{base}/control",
    }
    sys.stdout.write(orjson.dumps(urls).decode() + "\n")
    sys.stdout.flush()
    log.info("simulator_started", port=port, pairs=sorted(engine.markets), rate=args.rate, seed=args.seed,
             replay=len(args.replay), recorded_frames=engine.recordings.frames)
    clock = asyncio.create_task(engine.run())
    failed: list[BaseException] = []

    def clock_stopped(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]
            log.error("clock_failed", error=repr(task.exception()))
            stop.set()  # a market that stopped moving must not look alive

    clock.add_done_callback(clock_stopped)
    await stop.wait()
    log.info("simulator_stopping", connections=len(engine.all_conns()))
    clock.cancel()
    for conn in engine.all_conns():
        conn.cancel_tasks()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(code=1001, message=b"simulator stopping"), 0.5)
    await runner.cleanup()
    log.info("simulator_stopped")
    if failed:
        raise failed[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        for spec in args.faults:
            parse_spec(spec)  # a bad spec stops start-up with one clear line
        asyncio.run(serve(args))
    except (FaultError, InvalidInstrument, OSError) as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 2
    return 0
