"""``cryptoflow backfill``: a venue's klines over REST into InfluxDB ``kline``, resumable, within rate limits.

``cryptoflow backfill --exchange binance --symbol BTC-USDT[,ETH-USDT] --timeframe 1m --from T [--to T]``
(open times in ``[from, to)``; T is epoch ms or ISO-8601, UTC unless it says otherwise; ``--to`` defaults to
now). Progress on stderr (a bar on a terminal), one summary line per symbol on stdout. Interrupted (Ctrl-C,
SIGTERM, SIGKILL), the same command resumes from the checkpoint in Redis (``backfill:{exchange}:{symbol}:{tf}``);
``--restart`` ignores it. Exit 0 done, 1 the venue refused or kept failing, 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from connectors.influx.sync import InfluxWriteError, SyncInfluxWriter
from connectors.redis.client import sync_client
from connectors.rest_klines.backfill import VENUES, BackfillResult, backfill, closed_range
from connectors.rest_klines.budget import Budget
from connectors.rest_klines.client import BackfillError, KlineClient
from connectors.rest_klines.store import Checkpoints
from cryptoflow.settings import Settings
from operators.events import epoch_ms, iso_ms
from operators.instruments import InvalidInstrument, validate_instrument, venue_symbol
from operators.klines import TIMEFRAME_MS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backfill", help="fetch a venue's klines over REST into InfluxDB (resumable)")
    p.add_argument("--exchange", required=True, choices=sorted(VENUES))
    p.add_argument("--symbol", required=True, help="instrument id(s), comma separated, e.g. BTC-USDT,ETH-USDT")
    p.add_argument("--timeframe", default="1m", choices=list(TIMEFRAME_MS))
    p.add_argument("--from", dest="start", required=True, type=when, help="first open time: epoch ms or ISO-8601")
    p.add_argument("--to", dest="end", type=when, default=None, help="end (exclusive; default now)")
    p.add_argument("--budget", type=Budget.parse, default=None, metavar="N/SECONDS",
                   help="request weight this client allows itself per window (default: a fraction of the "
                   "venue's limit: binance 1200/60, okx 10/2, bybit 100/5)")
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint and start at --from")
    p.set_defaults(run=run)


def when(text: str) -> int:
    """Epoch milliseconds from ``text``: digits (epoch ms) or ISO-8601 (UTC unless an offset is given)."""
    if text.isdigit():
        return int(text)
    try:
        return epoch_ms(text)
    except ValueError:
        msg = f"expected epoch milliseconds or an ISO-8601 time, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _symbols(args: argparse.Namespace) -> list[str]:
    out = [validate_instrument(s.strip()) for s in args.symbol.split(",") if s.strip()]
    if args.exchange != "okx":
        for inst in out:
            venue_symbol(inst)  # Binance and Bybit: spot ids only
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        symbols = _symbols(args)
    except InvalidInstrument as err:
        print(f"cryptoflow backfill: {err}", file=sys.stderr)
        return 2
    if settings.influx_url is None:
        print("cryptoflow backfill: INFLUX_URL is unset: there is nowhere to write klines", file=sys.stderr)
        return 2
    end = args.end if args.end is not None else int(time.time() * 1000)
    if end <= args.start:
        print(f"cryptoflow backfill: --to ({end}) must be after --from ({args.start})", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(_backfill_all(args, settings, symbols, end))
    except (BackfillError, InfluxWriteError) as err:  # the checkpoint holds what was written: run again to resume
        print(f"cryptoflow backfill: {err}", file=sys.stderr)
        return 1
    for inst, r in results:
        what = f"backfill {args.exchange} {inst} {args.timeframe}"
        if r.resumed and r.start_ms >= r.end_ms:
            print(f"{what}: already complete up to {iso_ms(r.end_ms)} (checkpoint; --restart to fetch again)")
            continue
        how = f"resumed at {iso_ms(r.start_ms)}" if r.resumed else f"from {iso_ms(r.start_ms)}"
        print(f"{what}: {r.klines} klines in {r.pages} pages ({how} to {iso_ms(r.end_ms)}), {r.missing} "
              "intervals the venue has no kline for")
    return 0


def _base_url(settings: Settings, exchange: str) -> str:
    url = {"binance": settings.binance_rest_url, "okx": settings.okx_rest_url, "bybit": settings.bybit_rest_url}
    return str(url[exchange])


async def _backfill_all(args: argparse.Namespace, settings: Settings, symbols: list[str],
                        end: int) -> list[tuple[str, BackfillResult]]:
    client = KlineClient(VENUES[args.exchange], _base_url(settings, args.exchange), args.budget)
    store = SyncInfluxWriter(str(settings.influx_url), settings.influx_token.get_secret_value(),
                             settings.influx_org, settings.influx_bucket)
    checkpoints = Checkpoints(sync_client(str(settings.redis_url)))
    span = TIMEFRAME_MS[args.timeframe]
    console = Console(stderr=True)
    results = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, disable=not console.is_terminal) as bar:
            for inst in symbols:
                first, last = closed_range(args.start, end, args.timeframe, int(time.time() * 1000))
                task = bar.add_task(f"{args.exchange} {inst} {args.timeframe}", total=max(0, (last - first) // span))

                def advance(reached: int, _n: int, task: TaskID = task, first: int = first) -> None:
                    bar.update(task, completed=(reached - first) // span)

                result = await backfill(client, store, checkpoints, inst, args.timeframe, args.start, end,
                                        restart=args.restart, progress=advance)
                results.append((inst, result))
    finally:
        await client.close()
        store.close()
    return results
