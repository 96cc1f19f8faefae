"""Replaying every real recording: each subscribed channel receives every recorded frame, byte-identical and
in order; REST answers with the recorded bodies. Plain ``websockets`` client and HTTP only.

Every real recording of the project is covered: ``tests/data/okx/*.jsonl`` and ``tests/data/simulator/*/``
(unmodified copies of ``../shared/recordings/``; provenance in ``tests/data/README.md``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import connect, http_text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FILES = sorted(str(p.relative_to(DATA)) for p in [*DATA.glob("okx/*.jsonl"), *DATA.glob("simulator/*/*.jsonl*")])


def _records(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _expected(records: list[dict[str, Any]]) -> dict[tuple[str, ...], list[str]]:
    """Recorded channel frames per (venue, channel key), in recorded order, as written by the venue."""
    out: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for rec in records:
        url = urlsplit(rec["source"])
        if url.scheme.startswith("http"):
            continue
        msg = json.loads(rec["data"])
        host = url.hostname or ""
        if "ok" in host and "arg" in msg and "data" in msg and "event" not in msg:
            out[("okx", msg["arg"]["channel"], msg["arg"]["instId"])].append(rec["data"])
        elif "binance" in host and "stream" in msg:
            out[("binance", msg["stream"])].append(rec["data"])
        elif "bybit" in host and "topic" in msg:
            out[("bybit", url.path.rsplit("/", 1)[-1], msg["topic"])].append(rec["data"])
    return out


def _key_of(venue: str, raw: str, kind: str = "") -> tuple[str, ...] | None:
    msg = json.loads(raw)
    if venue == "okx":
        return None if "event" in msg else ("okx", msg["arg"]["channel"], msg["arg"]["instId"])
    if venue == "binance":
        return ("binance", msg["stream"]) if "stream" in msg else None
    return ("bybit", kind, msg["topic"]) if "topic" in msg else None


async def _collect(sim: Simulator, expected: dict[tuple[str, ...], list[str]]) -> dict[tuple[str, ...], list[str]]:
    got: dict[tuple[str, ...], list[str]] = defaultdict(list)
    total = sum(len(v) for v in expected.values())
    tasks = []
    complete = asyncio.Event()
    count = 0

    async def read(ws: Any, venue: str, kind: str = "") -> None:
        nonlocal count
        while True:
            raw = await ws.recv()
            key = _key_of(venue, raw, kind)
            if key is not None:
                got[key].append(raw)
                count += 1
                if count >= total:
                    complete.set()

    okx = sorted(k for k in expected if k[0] == "okx")
    conns = []
    if okx:
        ws = await connect(sim.okx_ws_url)
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": c, "instId": i} for _, c, i in okx]}))
        conns.append(ws)
        tasks.append(read(ws, "okx"))
    streams = sorted(k[1] for k in expected if k[0] == "binance")
    if streams:
        ws = await connect(f"{sim.binance_ws_url}/stream?streams={'/'.join(streams)}")
        conns.append(ws)
        tasks.append(read(ws, "binance"))
    for kind in sorted({k[1] for k in expected if k[0] == "bybit"}):
        ws = await connect(sim.bybit_ws_url.rsplit("/", 1)[0] + f"/{kind}")
        topics = sorted(k[2] for k in expected if k[:2] == ("bybit", kind))
        await ws.send(json.dumps({"op": "subscribe", "args": topics}))
        conns.append(ws)
        tasks.append(read(ws, "bybit", kind))
    readers = [asyncio.ensure_future(t) for t in tasks]
    try:
        waiter = asyncio.ensure_future(complete.wait())
        done, _ = await asyncio.wait([waiter, *readers], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a reader only ends by an error (connection closed): raise it
        assert waiter in done, f"{count} of {total} recorded frames arrived within 120 s"
    finally:
        for task in [*readers, waiter]:
            task.cancel()
        for ws in conns:
            await ws.close()
    return got


@pytest.mark.parametrize("name", FILES)
def test_replay_is_byte_identical_and_in_order(name: str, start_simulator: Callable[..., Simulator]) -> None:
    path = DATA / name
    records = _records(path)
    expected = _expected(records)
    assert expected, f"{name} has no channel frames"
    sim = start_simulator("--replay", str(path), "--speed", "0")
    got = asyncio.run(_collect(sim, expected))
    assert set(got) == set(expected)
    for key, frames in expected.items():
        assert got[key] == frames, f"{key}: {len(got[key])} frames received, {len(frames)} recorded"
    deadline = time.monotonic() + 10
    while not sim.status()["replay_finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # REST paths answer with the recorded bodies, byte for byte.
    for rec in records:
        url = urlsplit(rec["source"])
        if url.scheme.startswith("http"):
            query = url.query.split("&")[0]
            local = (sim.okx_rest_url if "ok" in (url.hostname or "") else sim.binance_rest_url)
            path_ = url.path if "okx" in (url.hostname or "") else "/api/v3/depth"
            assert http_text(f"{local}{path_}?{query}") == rec["data"]
            break


def test_every_recording_is_covered() -> None:
    assert len(FILES) == 7


def test_replay_paced_by_recorded_time(start_simulator: Callable[..., Simulator]) -> None:
    path = DATA / "simulator" / "bybit" / "bybit-2024-12-01-xrpusdt-orderbook500.jsonl"
    records = _records(path)
    span = records[-1]["ts"] - records[0]["ts"]
    sim = start_simulator("--replay", str(path), "--speed", "10")
    started = time.monotonic()
    got = asyncio.run(_collect(sim, _expected(records)))
    assert sum(len(v) for v in got.values()) == len(records)
    assert time.monotonic() - started >= span / 10 * 0.9  # a lower bound: frames wait for their recorded time


def test_replayed_instruments_are_known(start_simulator: Callable[..., Simulator]) -> None:
    okx_file = DATA / "okx" / "okx-2022-05-13-books-trades-tickers.jsonl"
    sim = start_simulator("--replay", str(okx_file), "--pairs", "ETH-USDT", "--speed", "0")

    async def scenario() -> list[dict[str, Any]]:
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "UNI-USD-SWAP"},
                                                                  {"channel": "books", "instId": "ETH-USDT"}]}))
            return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(6)]

    msgs = asyncio.run(scenario())
    assert [m["event"] for m in msgs[:2]] == ["subscribe", "subscribe"]
    assert {m["arg"]["instId"] for m in msgs[2:]} == {"UNI-USD-SWAP", "ETH-USDT"}  # replayed + synthetic
    ids = {i["instId"] for i in json.loads(http_text(f"{sim.okx_rest_url}/api/v5/public/instruments"))["data"]}
    assert {"BTC-USDT", "BTC-USD-220527", "UNI-USD-SWAP", "ETH-USDT"} <= ids


def test_several_files_of_several_venues_at_once(start_simulator: Callable[..., Simulator]) -> None:
    files = [DATA / "okx" / "okx-2022-05-13-books-trades-tickers.jsonl",
             DATA / "simulator" / "binance" / "binance-2021-10-12-depth-aggtrade-kline.jsonl",
             DATA / "simulator" / "bybit" / "bybit-2024-12-01-xrpusdt-orderbook500.jsonl"]
    expected: dict[tuple[str, ...], list[str]] = {}
    for path in files:
        expected.update(_expected(_records(path)))
    wanted = {k: v for k, v in expected.items() if k in {("okx", "trades", "UNI-USD-SWAP"),
                                                         ("binance", "nknusdt@aggTrade"),
                                                         ("bybit", "linear", "orderbook.500.XRPUSDT")}}
    assert len(wanted) == 3
    sim = start_simulator("--replay", *map(str, files), "--speed", "0")
    got = asyncio.run(_collect(sim, wanted))
    assert got == wanted
