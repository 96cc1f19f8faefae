"""Recorded sessions (docs/CONTRACTS.md "Recording format", ``.jsonl`` or ``.jsonl.gz``) indexed for replay.

Each WebSocket frame is filed under its venue (from the ``source`` URL) and its channel: OKX
``(channel, instId)`` of data frames (the recorded subscribe answers are not channel frames), Binance the
combined-stream name, Bybit ``(spot|linear|..., topic)``. REST bodies are filed by instrument/symbol. The
text is kept exactly as recorded, with its time relative to the start of its file for pacing.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from cryptoflow.logs import get_logger
from simulator.conn import Sub

log = get_logger("simulator.replay")

Frames = list[tuple[float, str]]  # (seconds since the start of the recording, raw text)


def venue_of(source: str) -> str | None:
    host = urlsplit(source).hostname or ""
    for venue, marks in (("okx", ("okx", "okex")), ("binance", ("binance",)), ("bybit", ("bybit",))):
        if any(m in host for m in marks):
            return venue
    return None


def binance_inner(wrapped: str) -> str:
    """The raw-stream form of a combined-stream frame: the text of its ``data`` member, sliced, not re-encoded."""
    marker = wrapped.find(',"data":')
    if wrapped.startswith('{"stream":') and marker > 0 and wrapped.endswith("}"):
        return wrapped[marker + len(',"data":'):-1]
    return orjson.dumps(orjson.loads(wrapped)["data"]).decode()


@dataclass
class Recordings:
    okx: dict[tuple[str, str], Frames] = field(default_factory=lambda: defaultdict(list))
    okx_rest_books: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    binance: dict[str, Frames] = field(default_factory=lambda: defaultdict(list))
    binance_rest_depth: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bybit: dict[tuple[str, str], Frames] = field(default_factory=lambda: defaultdict(list))
    files: list[str] = field(default_factory=list)
    frames: int = 0

    @property
    def okx_instruments(self) -> set[str]:
        return {inst for _, inst in self.okx} | set(self.okx_rest_books)

    @property
    def binance_symbols(self) -> set[str]:
        return {stream.split("@", 1)[0].upper() for stream in self.binance} | set(self.binance_rest_depth)

    def bybit_symbols(self, kind: str) -> set[str]:
        return {topic.rsplit(".", 1)[-1] for k, topic in self.bybit if k == kind}

    def load(self, path: Path) -> None:
        opener = gzip.open if path.suffix == ".gz" else open
        origin: float | None = None
        with opener(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                record = orjson.loads(line)
                ts, source, data = float(record["ts"]), str(record["source"]), str(record["data"])
                origin = ts if origin is None else origin
                self._add(ts - origin, source, data)
        self.files.append(str(path))
        log.info("recording_loaded", path=str(path), frames=self.frames)

    def _add(self, offset: float, source: str, data: str) -> None:
        venue = venue_of(source)
        url = urlsplit(source)
        query = parse_qs(url.query)
        if url.scheme in ("http", "https"):
            if venue == "okx" and url.path.endswith("/market/books") and "instId" in query:
                self.okx_rest_books[query["instId"][0]].append(data)
            elif venue == "binance" and url.path.endswith("/depth") and "symbol" in query:
                self.binance_rest_depth[query["symbol"][0].upper()].append(data)
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        if venue == "okx":
            arg = msg.get("arg")
            if isinstance(arg, dict) and "data" in msg and "event" not in msg:
                self.okx[(str(arg.get("channel")), str(arg.get("instId")))].append((offset, data))
                self.frames += 1
        elif venue == "binance":
            if "stream" in msg and "data" in msg:
                self.binance[str(msg["stream"])].append((offset, data))
                self.frames += 1
            elif "e" in msg and "s" in msg:  # recorded from a raw /ws stream: file it under its stream name
                stream = f"{str(msg['s']).lower()}@{_BINANCE_EVENT_STREAM.get(str(msg['e']), str(msg['e']))}"
                wrapped = f'{{"stream":"{stream}","data":{data}}}'
                self.binance[stream].append((offset, wrapped))
                self.frames += 1
        elif venue == "bybit" and "topic" in msg:
            kind = url.path.rstrip("/").rsplit("/", 1)[-1]
            self.bybit[(kind, str(msg["topic"]))].append((offset, data))
            self.frames += 1


_BINANCE_EVENT_STREAM = {"depthUpdate": "depth", "aggTrade": "aggTrade", "trade": "trade", "24hrTicker": "ticker"}


def load_recordings(paths: Iterable[str]) -> Recordings:
    recordings = Recordings()
    for p in paths:
        recordings.load(Path(p))
    return recordings


async def replay_to(sub: Sub, frames: Frames, speed: float, transform: object, on_done: Callable[[], None]) -> None:
    """Send ``frames`` to one subscription in order, paced by recorded time / ``speed`` (0: flow control only)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = sub.conn
    conn.flush()
    try:
        for offset, text in frames:
            if speed > 0:
                delay = start + offset / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if conn.closed or conn.ws.closed:
                return
            out = transform(text) if callable(transform) else text
            await conn.ws.send_str(out)
            conn.activity = True
            sub.frames += 1
        sub.done = True
        on_done()
        log.info("replay_finished", venue=sub.venue, channel=sub.channel, inst=sub.inst, frames=sub.frames)
    except (ConnectionResetError, RuntimeError) as err:
        log.info("replay_stopped", venue=sub.venue, channel=sub.channel, inst=sub.inst, error=str(err))
