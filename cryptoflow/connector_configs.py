"""Settings -> the small frozen configs the connectors take: the one place that maps one to the other.

Connectors never see :class:`cryptoflow.settings.Settings` (issue 14; ``tests/test_layout.py`` checks it): each
takes a config holding only the values it uses. The entry points (dataflows, commands, benchmarks, tests)
build those configs here, from their settings. Each function imports its connector when called, so an entry
point loads only the connectors it uses (the email sender never imports the WebSocket sources).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.alerts.matcher import PriceAlertSink
    from connectors.binance.book_source import BinanceBooksConfig
    from connectors.books.items import CollectorItem
    from connectors.bybit.book_source import BybitBooksConfig
    from connectors.email.sink import EmailSink
    from connectors.email.smtp import SmtpConfig
    from connectors.influx.writer import InfluxConfig
    from connectors.local.source import LocalConfig
    from connectors.market.source import MarketSourceConfig
    from connectors.okx.book_source import OkxBooksConfig
    from connectors.redis.market_sink import MarketRedisItem
    from connectors.redis.pairs import PairsConfig
    from connectors.redis.sink import RedisPipelineSink
    from connectors.rest_klines.repair import RepairConfig
    from connectors.ws.budget import WsTiming
    from connectors.ws.source import WsShardSource
    from cryptoflow.settings import Settings


# ------------------------------------------------------------------------------------------------ InfluxDB
def influx_config(settings: Settings) -> InfluxConfig:
    """``INFLUX_URL`` (``None`` when unset), ``INFLUX_TOKEN``, ``INFLUX_ORG``, ``INFLUX_BUCKET``,
    ``INFLUX_FLUSH_INTERVAL``."""
    from connectors.influx.writer import InfluxConfig

    return InfluxConfig(None if settings.influx_url is None else str(settings.influx_url),
                        settings.influx_token.get_secret_value(), settings.influx_org, settings.influx_bucket,
                        int(settings.influx_flush_interval * 1000))


def influx_enabled(settings: Settings) -> bool:
    """Whether InfluxDB is configured; says once, in the log, when it is not."""
    from connectors.influx.writer import influx_configured

    return influx_configured(influx_config(settings))


# ---------------------------------------------------------------------------------------------- email
def smtp_config(settings: Settings) -> SmtpConfig:
    from connectors.email.smtp import SmtpConfig

    return SmtpConfig(host=settings.smtp_host, port=settings.smtp_port, sender=settings.email_from,
                      user=settings.smtp_user, password=settings.smtp_password.get_secret_value(),
                      starttls=settings.smtp_starttls, timeout=settings.smtp_timeout)


def email_sink(settings: Settings) -> EmailSink:
    from connectors.email.sink import EmailSink, RetryPolicy

    policy = RetryPolicy(settings.email_max_attempts, settings.email_backoff_initial, settings.email_backoff_max)
    return EmailSink(str(settings.redis_url), smtp_config(settings), policy, concurrency=settings.email_concurrency)


def price_alert_sink(settings: Settings) -> PriceAlertSink:
    from connectors.alerts.matcher import PriceAlertSink

    return PriceAlertSink(str(settings.redis_url), max_age_s=settings.price_alert_max_age,
                          stream_maxlen=settings.stream_maxlen)


# ---------------------------------------------------------------------------------------------- sources
def pairs_config(settings: Settings) -> PairsConfig:
    from connectors.redis.pairs import PairsConfig

    return PairsConfig(str(settings.redis_url), settings.redis_trading_pairs_key, settings.max_trading_pairs,
                       settings.trading_pairs_poll_interval)


def ws_timing(settings: Settings) -> WsTiming:
    from connectors.ws.budget import WsTiming

    return WsTiming(settings.ws_ping_interval, settings.ws_pong_timeout, settings.ws_backoff_initial,
                    settings.ws_backoff_max)


def okx_books_config(settings: Settings) -> OkxBooksConfig:
    """The order-book source's config (``sample_levels`` only when InfluxDB is configured)."""
    from connectors.okx.book_source import OkxBooksConfig

    return OkxBooksConfig(
        ws_url=str(settings.okx_ws_url), rest_url=str(settings.okx_rest_url), channel=settings.okx_book_channel.value,
        pairs_per_connection=settings.okx_pairs_per_connection, timing=ws_timing(settings),
        stale_after=settings.ws_stale_after, pairs=pairs_config(settings),
        sample_interval=settings.influx_book_interval,
        sample_levels=settings.influx_book_levels if settings.influx_enabled else None,
    )


# Binance (1,024 streams) and Bybit (200 topics) take many topics per connection; 50 keeps a reconnect's resync
# burst and one connection's traffic small, and is one connection for the default 10 pairs.
VENUE_BOOKS_PER_CONNECTION = 50


def binance_books_config(settings: Settings) -> BinanceBooksConfig:
    from connectors.binance.book_source import BinanceBooksConfig

    return BinanceBooksConfig(ws_url=str(settings.binance_ws_url), rest_url=str(settings.binance_rest_url),
                              pairs_per_connection=VENUE_BOOKS_PER_CONNECTION, timing=ws_timing(settings),
                              stale_after=settings.ws_stale_after, pairs=pairs_config(settings))


def bybit_books_config(settings: Settings) -> BybitBooksConfig:
    from connectors.bybit.book_source import BybitBooksConfig

    return BybitBooksConfig(ws_url=str(settings.bybit_ws_url), depth=settings.bybit_book_depth,
                            pairs_per_connection=VENUE_BOOKS_PER_CONNECTION, timing=ws_timing(settings),
                            stale_after=settings.ws_stale_after, pairs=pairs_config(settings))


def book_sources(settings: Settings) -> list[tuple[str, WsShardSource[CollectorItem]]]:
    """``BOOK_VENUES``' collector sources, OKX first: ``(venue, source)``."""
    from connectors.binance.book_source import binance_books_source
    from connectors.bybit.book_source import bybit_books_source
    from connectors.okx.book_source import okx_books_source

    build = {"okx": lambda: okx_books_source(okx_books_config(settings)),
             "binance": lambda: binance_books_source(binance_books_config(settings)),
             "bybit": lambda: bybit_books_source(bybit_books_config(settings))}
    return [(v, build[v]()) for v in ("okx", "binance", "bybit") if v in settings.book_venues]


def market_source_config(settings: Settings) -> MarketSourceConfig:
    from connectors.market.source import MarketSourceConfig

    return MarketSourceConfig(
        venues=tuple(settings.market_data_venues), timeframes=tuple(settings.kline_timeframes),
        binance_trade_stream=settings.binance_trade_stream.value, okx_ws_url=str(settings.okx_ws_url),
        okx_business_url=settings.okx_business_url, binance_ws_url=str(settings.binance_ws_url),
        bybit_ws_url=str(settings.bybit_ws_url), timing=ws_timing(settings), pairs=pairs_config(settings),
    )


MARKET_REDIS_PARTITIONS = 8  # fixed: the recovery store keys the sink's snapshots by partition


def market_redis_sink(settings: Settings) -> RedisPipelineSink[MarketRedisItem]:
    """``market_data``'s Redis sink: :class:`connectors.redis.market_sink.MarketWriter` in one pipeline per batch,
    each written batch's reports and latencies then to Prometheus (``MarketWriter.written``); partitioned by
    instrument (``market_item_key``) so several workers share the writes."""
    from connectors.redis.market_sink import MarketWriter, market_item_key
    from connectors.redis.sink import RedisPipelineSink

    writer = MarketWriter(stream_maxlen=settings.stream_maxlen)
    return RedisPipelineSink(str(settings.redis_url), writer, writer.written, key=market_item_key,
                             partitions=MARKET_REDIS_PARTITIONS)


def local_config(settings: Settings) -> LocalConfig:
    from connectors.local.source import LocalConfig

    return LocalConfig(pairs_config(settings), settings.local_stream_batch,
                       settings.local_stream_block_ms, settings.local_stream_shards)


# ---------------------------------------------------------------------------------------------- kline repair
def repair_config(settings: Settings) -> RepairConfig:
    """Venues of ``MARKET_DATA_VENUES`` that have REST klines, their REST URLs, ``KLINE_TIMEFRAMES``, the
    InfluxDB bucket, the monitored pairs and ``KLINE_BACKFILL``."""
    from connectors.rest_klines.backfill import VENUES
    from connectors.rest_klines.repair import RepairConfig

    urls = {"binance": settings.binance_rest_url, "okx": settings.okx_rest_url, "bybit": settings.bybit_rest_url}
    return RepairConfig(tuple(v for v in settings.market_data_venues if v in VENUES),
                        {v: str(u) for v, u in urls.items()}, tuple(settings.kline_timeframes),
                        influx_config(settings), str(settings.redis_url), settings.redis_trading_pairs_key,
                        settings.max_trading_pairs, settings.kline_backfill)


def repair_enabled(settings: Settings) -> bool:
    """``KLINE_BACKFILL > 0`` and InfluxDB configured: ``market_data`` backfills and repairs klines over REST."""
    return settings.kline_backfill > 0 and settings.influx_url is not None
