"""What the demo shows: one :class:`Snapshot` of Redis per refresh, drawn as a live ``rich`` table on a
terminal, or as compact text lines when stdout is a pipe or a file (no ANSI codes there).

The pairs are re-read from ``config:trading_pairs`` at every refresh, so a pair added live
(``redis-cli SADD config:trading_pairs DOGE-USDT`` or ``cryptoflow pairs add``) appears without a restart.
Everything read from Redis is shown through :func:`connectors.untrusted.sample`, so an absurd id or field
cannot flood the screen or a log.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import orjson
import redis
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from connectors.redis.keys import ALERTS_HISTORY, EMAIL_QUEUE, analysis_key, orderbook_key
from connectors.untrusted import sample

HISTORY_SCAN = 200  # newest alerts:history entries searched for each pair's last alert
ID_CHARS = 24  # the longest real OKX ids (options, BTC-USD-220527-40000-C) are 22


@dataclass(frozen=True)
class PairRow:
    inst: str
    book: str
    bid: str
    ask: str
    last: str
    change: str
    support: str
    resistance: str
    liquidity: str
    liquidity_alert: str
    depth: str
    depth_alert: str
    trend: str
    last_alert: str  # one readable line, "-" when none


@dataclass(frozen=True)
class Snapshot:
    rows: tuple[PairRow, ...]
    rejected: tuple[tuple[str, str], ...]
    emails_pending: int
    emails_dead: int


def read_snapshot(client: redis.Redis, pairs_key: str) -> Snapshot:
    pairs = sorted(cast(set[str], client.smembers(pairs_key)))
    rejected = cast(dict[str, str], client.hgetall(f"{pairs_key}:rejected"))
    history = cast(list[str], client.lrange(ALERTS_HISTORY, 0, HISTORY_SCAN - 1))
    last_alerts: dict[str, str] = {}
    for raw in history:  # newest first
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError, ValueError):
            entry = orjson.loads(raw)
            last_alerts.setdefault(str(entry.get("instrument_id")), alert_line(entry))
    rows = tuple(_row(client, inst, last_alerts.get(inst, "-")) for inst in pairs if inst not in rejected)
    return Snapshot(
        rows=rows,
        rejected=tuple((sample(i, ID_CHARS), sample(why, 60)) for i, why in sorted(rejected.items())),
        emails_pending=int(client.llen(EMAIL_QUEUE)),
        emails_dead=int(client.llen(f"{EMAIL_QUEUE}:dead")),
    )


def _row(client: redis.Redis, inst: str, last_alert: str) -> PairRow:
    book = cast(list[str | None], client.hmget(orderbook_key(inst), "status", "bids", "asks"))
    bid = ask = "-"
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, IndexError):
        bids, asks = orjson.loads(book[1] or "[]"), orjson.loads(book[2] or "[]")
        bid, ask = (str(bids[0][0]) if bids else "-"), (str(asks[0][0]) if asks else "-")
    a = cast(list[str | None], client.hmget(
        analysis_key(inst), "support_level_1", "resistance_level_1", "liquidity_index", "liquidity_alert",
        "depth_anomaly_score", "depth_anomaly_alert", "large_order_trend"))
    t = cast(list[str | None], client.hmget(f"ticker:okx:{inst}", "price", "change_24h"))
    return PairRow(
        inst=inst, book=_text(book[0]), bid=_text(bid), ask=_text(ask), last=_num(t[0]),
        change=_num(t[1], "+.2f", "%"), support=_num(a[0]), resistance=_num(a[1]), liquidity=_num(a[2], ".2f"),
        liquidity_alert=_text(a[3]), depth=_num(a[4], "+.1f"), depth_alert=_text(a[5]), trend=_text(a[6]),
        last_alert=last_alert,
    )


def alert_line(entry: dict[str, object]) -> str:
    """``17:20:05 depth_anomaly alert 3.41 (threshold 3)``: one alerts:history entry, readable."""
    when = str(entry.get("timestamp") or "")
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when.replace("Z", "+00:00")).strftime("%H:%M:%S")
    value, threshold = entry.get("value"), entry.get("threshold")
    shown = f"{value:.3g}" if isinstance(value, int | float) else "-"
    limit = f" (threshold {threshold:g})" if isinstance(threshold, int | float) else ""
    return sample(f"{when} {entry.get('alert_type')} {entry.get('level')} {shown}{limit}", 60)


def _text(value: str | None, limit: int = 12) -> str:
    return sample(value, limit) if value else "-"


def _num(value: str | None, fmt: str = ".6g", suffix: str = "") -> str:
    if not value:
        return "-"
    try:
        return f"{float(value):{fmt}}{suffix}"
    except ValueError:
        return _text(value)


_STYLE = {"valid": "green", "normal": "green", "syncing": "yellow", "warning": "yellow", "resyncing": "red",
          "stale": "red", "alert": "bold red", "bullish": "green", "bearish": "red"}


def _styled(value: str, shown: str | None = None) -> Text:
    return Text(shown if shown is not None else value, style=_STYLE.get(value, ""))


def render(snap: Snapshot, *, notes: list[str], title: str) -> RenderableType:
    """The live table (fits 120 columns): one row per monitored pair, then each pair's last analysis alert."""
    # One space between columns and none at the edges: 11 columns of a 22-character option id and 10-character
    # values still fit 120 columns.
    compact = {"box": box.SIMPLE_HEAD, "padding": (0, 1), "collapse_padding": True, "pad_edge": False,
               "show_edge": False, "title_justify": "left"}
    table = Table(title=title, **compact)  # type: ignore[arg-type]
    for name, justify in (("pair", "left"), ("book", "left"), ("bid", "right"), ("ask", "right"),
                          ("last", "right"), ("24h", "right"), ("support", "right"), ("resist.", "right"),
                          ("liquidity", "left"), ("depth z", "left"), ("trend", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in snap.rows:
        table.add_row(sample(r.inst, ID_CHARS), _styled(r.book), r.bid, r.ask, r.last, r.change, r.support,
                      r.resistance, _level(r.liquidity, r.liquidity_alert), _level(r.depth, r.depth_alert),
                      _styled(r.trend))
    if not snap.rows:
        table.add_row("(no pairs)", *[""] * 10)
    alerts = Table(title="last analysis alert per pair", **compact)  # type: ignore[arg-type]
    alerts.add_column("pair", no_wrap=True)
    alerts.add_column("time, analysis, level, value", no_wrap=True)
    for r in snap.rows:
        alerts.add_row(sample(r.inst, ID_CHARS), _styled_alert(r.last_alert))
    footer = Text(f"email queue: {snap.emails_pending} pending, {snap.emails_dead} dead", style="dim")
    parts: list[RenderableType] = [table, Text(""), alerts, Text(""), footer]
    for inst, why in snap.rejected:
        parts.append(Text(f"rejected {inst}: {why}", style="yellow"))
    parts.extend(Text(n) for n in notes)
    return Group(*parts)


_SHORT = {"normal": "ok", "warning": "warn", "alert": "ALERT"}


def _level(value: str, level: str) -> Text:
    if value == "-" and level == "-":
        return Text("-")
    return Text(f"{value} {_SHORT.get(level, level)}", style=_STYLE.get(level, ""))


def _styled_alert(line: str) -> Text:
    level = line.split(" ")[2] if line.count(" ") >= 2 else ""
    return Text(line, style=_STYLE.get(level, ""))


def plain_lines(snap: Snapshot) -> list[str]:
    """One compact line per pair (under 120 characters) for a pipe or a log file: status, best bid/ask, last
    price, support/resistance, liquidity index and depth z-score with their levels, trend."""
    stamp = time.strftime("%H:%M:%S")
    return [
        f"{stamp} {sample(r.inst, ID_CHARS):<9} {r.book:<9} {r.bid}/{r.ask} last {r.last} "
        f"S/R {r.support}/{r.resistance} liq {r.liquidity} {_SHORT.get(r.liquidity_alert, r.liquidity_alert)} "
        f"z {r.depth} {_SHORT.get(r.depth_alert, r.depth_alert)} {r.trend}"
        for r in snap.rows
    ]
