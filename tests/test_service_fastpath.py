"""The fast path (:mod:`service.fastpath`) answers exactly as the FastAPI routes it stands in front of.

Oracle: the same app with the fast path switched off. Each request goes to both, in process, against a real
Redis holding books and tickers written by the sinks' own field builders; status, content type and body must be
equal, and the requests the fast path is meant to take must have been taken by it (else the test proves
nothing).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from connectors.redis.book_sink import book_fields
from connectors.redis.market_sink import write_market
from cryptoflow.settings import load_settings
from operators.events import BookStatus, BookView, Level, Ticker
from service.app import create_app
from service.fastpath import FastPath
from tests.fixtures.redis import RedisServer

NOW_MS = 1_764_400_000_000

# (path, query, taken by the fast path)
REQUESTS = [
    ("/v1/orderbook/BTC-USDT", b"", True),
    ("/v1/orderbook/BTC-USDT", b"depth=1", True),
    ("/v1/orderbook/BTC-USDT", b"depth=400", True),
    ("/v1/orderbook/BTC-USDT", b"depth=5&depth=7", True),
    ("/v1/orderbook/BTC-USDT", b"depth=20&unknown=1", True),
    ("/v1/orderbook/ETH-USDT", b"exchange=binance&depth=50", True),
    ("/v1/orderbook/XRP-USDT", b"", True),  # 404
    ("/v1/orderbook/BAD-USDT", b"", True),  # 500: the stored book is not JSON
    ("/v1/orderbook/BTC-USDT", b"depth=401", False),
    ("/v1/orderbook/BTC-USDT", b"depth=0", False),
    ("/v1/orderbook/BTC-USDT", b"depth=020", False),
    ("/v1/orderbook/BTC-USDT", b"depth=", False),
    ("/v1/orderbook/BTC-USDT", b"depth=x", False),
    ("/v1/orderbook/BTC-USDT", b"depth=" + b"9" * 5000, False),
    ("/v1/orderbook/BTC-USDT", b"exchange=kraken", False),
    ("/v1/orderbook/BTC-USDT", b"exchange=", False),
    ("/v1/orderbook/btc-usdt", b"", False),
    ("/v1/orderbook/BTC-USDT/", b"", False),
    ("/v1/orderbook/", b"", False),
    ("/v1/tickers", b"", True),
    ("/v1/tickers", b"exchange=okx", True),
    ("/v1/tickers", b"exchange=local", True),
    ("/v1/tickers", b"symbol=ETH-USDT&exchange=bybit", True),
    ("/v1/tickers", b"symbol=XRP-USDT", True),
    ("/v1/tickers", b"symbol=BTCUSDT", False),
    ("/v1/tickers", b"exchange=ftx", False),
    ("/v1/tickers", b"symbol=", False),
    ("/v1/tickers/", b"", False),
]


def _levels(n: int, start: int, step: int) -> tuple[Level, ...]:
    return tuple(Level(f"{start + step * i}.{i % 7}0", f"0.{i + 1:03d}00") for i in range(n))


def _seed(client: redis.Redis) -> None:
    for venue, inst, n in (("okx", "BTC-USDT", 400), ("binance", "ETH-USDT", 3)):
        view = BookView(venue, inst, BookStatus.VALID, _levels(n, 60_000, -1), _levels(n, 60_001, 1), NOW_MS,
                        time.time_ns(), checksum=-5, seq_id=7)
        key = "orderbook:BTC-USDT" if venue == "okx" else f"orderbook:{venue}:{inst}"
        client.hset(key, mapping=book_fields(view))  # type: ignore[arg-type]
    client.hset("orderbook:BAD-USDT", mapping={"bids": "[[1,2],[3", "asks": "[]", "status": "valid"})
    client.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    pipe = client.pipeline()
    write_market(pipe, [Ticker(v, p, Decimal("100.50"), Decimal("100.4"), Decimal("100.6"), Decimal("12.0"),
                               Decimal("-1.5"), Decimal("110"), Decimal("90"), NOW_MS)
                        for p in ("BTC-USDT", "ETH-USDT", "XRP-USDT") for v in ("okx", "bybit")])  # type: ignore[arg-type]
    pipe.execute()


class _Spy(FastPath):
    taken: list[bool]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> bool:
        took = await super().__call__(scope, receive, send)
        self.taken.append(took)
        return took


async def _get(app: Any, path: str, query: bytes,
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[int, bytes | None, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": [(b"host", b"test"), *headers], "client": ("127.0.0.1", 1), "server": ("test", 80), "state": {}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = dict(sent[0]["headers"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert headers[b"content-length"] == str(len(body)).encode()
    return sent[0]["status"], headers.get(b"content-type"), body


def test_the_fast_path_answers_as_fastapi_does(tmp_path: Path, redis_server: RedisServer,
                                                redis_db: redis.Redis) -> None:
    _seed(redis_db)
    app = create_app(load_settings(redis_url=redis_server.url, data_dir=str(tmp_path)))
    assert isinstance(app.fastpath, FastPath)  # type: ignore[attr-defined]
    spy = _Spy(app)
    spy.taken = []

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for path, query, fast in REQUESTS:
                app.fastpath = None  # type: ignore[attr-defined]
                expected = await _get(app, path, query)
                app.fastpath = spy  # type: ignore[attr-defined]
                got = await _get(app, path, query)
                assert got == expected, (path, query)
                assert spy.taken.pop() is fast, (path, query)
            huge = ((b"content-length", b"999999999"),)  # a GET with a body: BodyLimit's 413, not the fast path
            assert (await _get(app, "/v1/tickers", b"", huge))[0] == 413
            assert spy.taken.pop() is False

    asyncio.run(main())


def test_redis_down_is_the_same_503(tmp_path: Path) -> None:
    from cryptoflow.servers import free_port

    app = create_app(load_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=str(tmp_path)))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for path in ("/v1/orderbook/BTC-USDT", "/v1/tickers"):
                status, _, body = await _get(app, path, b"")
                assert (status, body) == (503, b'{"code":"redis_unavailable","msg":"redis is unavailable; '
                                               b'try again shortly"}')

    asyncio.run(main())


def test_no_fast_path_when_reads_need_a_key(tmp_path: Path, redis_server: RedisServer) -> None:
    app = create_app(load_settings(redis_url=redis_server.url, data_dir=str(tmp_path), api_public_reads=False))
    assert app.fastpath is None  # type: ignore[attr-defined]


def _count_reads(monkeypatch: Any, delay: float = 0.0) -> list[str]:
    """The fast path's book reads, recorded (and made ``delay`` s slower); the list fills as they happen."""
    import service.fastpath

    reads: list[str] = []
    real = service.fastpath.read_book

    async def counted(client: Any, exchange: Any, inst: str) -> list[str | None]:
        reads.append(inst)
        if delay:
            await asyncio.sleep(delay)
        return await real(client, exchange, inst)

    monkeypatch.setattr(service.fastpath, "read_book", counted)
    return reads


def test_overlapping_identical_requests_share_one_read_and_none_is_cached(
        tmp_path: Path, redis_server: RedisServer, redis_db: redis.Redis, monkeypatch: Any) -> None:
    _seed(redis_db)
    reads = _count_reads(monkeypatch)
    app = create_app(load_settings(redis_url=redis_server.url, data_dir=str(tmp_path)))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            answers = await asyncio.gather(*(_get(app, "/v1/orderbook/BTC-USDT", b"depth=3") for _ in range(10)),
                                           _get(app, "/v1/orderbook/BTC-USDT", b"depth=4"))
            assert len(reads) == 2 and len({a[2] for a in answers[:10]}) == 1
            assert answers[0][0] == 200 and answers[0][2] != answers[10][2]
            redis_db.hset("orderbook:BTC-USDT", "status", "resyncing")  # the next request reads anew
            _, _, body = await _get(app, "/v1/orderbook/BTC-USDT", b"depth=3")
            assert len(reads) == 3 and b'"status":"resyncing"' in body

    asyncio.run(main())


def test_a_request_waiting_on_a_cancelled_one_reads_for_itself(
        tmp_path: Path, redis_server: RedisServer, redis_db: redis.Redis, monkeypatch: Any) -> None:
    _seed(redis_db)
    reads = _count_reads(monkeypatch, delay=0.2)
    app = create_app(load_settings(redis_url=redis_server.url, data_dir=str(tmp_path)))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            first = asyncio.create_task(_get(app, "/v1/orderbook/BTC-USDT", b""))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(_get(app, "/v1/orderbook/BTC-USDT", b""))
            await asyncio.sleep(0.05)
            first.cancel()
            status, _, body = await second
            assert status == 200 and b'"instrument_id":"BTC-USDT"' in body
            assert len(reads) == 2 and first.cancelled()

    asyncio.run(main())
