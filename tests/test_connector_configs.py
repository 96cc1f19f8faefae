"""cryptoflow.connector_configs: each connector's config carries exactly the settings' values, secrets stay out
of reprs, and the predicates say what the dataflows wire."""

from __future__ import annotations

from structlog.testing import capture_logs

from cryptoflow.connector_configs import (
    influx_config,
    influx_enabled,
    local_config,
    market_source_config,
    okx_books_config,
    repair_config,
    repair_enabled,
    smtp_config,
)
from cryptoflow.settings import load_settings

URLS = {"redis_url": "redis://127.0.0.1:7001/3", "okx_ws_url": "ws://127.0.0.1:7002/ws/v5/public",
        "okx_rest_url": "http://127.0.0.1:7003", "binance_ws_url": "ws://127.0.0.1:7004",
        "binance_rest_url": "http://127.0.0.1:7005", "bybit_ws_url": "ws://127.0.0.1:7006/v5/public/spot",
        "bybit_rest_url": "http://127.0.0.1:7007"}


def test_the_sources_get_the_settings_values() -> None:
    s = load_settings(**URLS, redis_trading_pairs_key="pairs:x", max_trading_pairs=12, trading_pairs_poll_interval=3.5,
                      okx_book_channel="books-l2-tbt", okx_pairs_per_connection=4, ws_ping_interval=11.0,
                      ws_pong_timeout=2.5, ws_stale_after=17.0, ws_backoff_initial=0.25, ws_backoff_max=9.0,
                      influx_url="http://127.0.0.1:7008", influx_book_interval=0.5, influx_book_levels=7,
                      market_data_venues="okx,bybit,local", kline_timeframes="1m,1h", binance_trade_stream="trade",
                      local_stream_batch=50, local_stream_block_ms=3, local_stream_shards=2)
    books = okx_books_config(s)
    assert (books.ws_url, books.rest_url, books.channel, books.pairs_per_connection) == (
        URLS["okx_ws_url"], URLS["okx_rest_url"] + "/", "books-l2-tbt", 4)
    t = books.timing
    assert (t.ping_interval, t.pong_timeout, books.stale_after, t.backoff_initial, t.backoff_max) == (
        11.0, 2.5, 17.0, 0.25, 9.0)
    assert (books.pairs.redis_url, books.pairs.key, books.pairs.limit, books.pairs.interval) == (
        URLS["redis_url"], "pairs:x", 12, 3.5)
    assert (books.sample_interval, books.sample_levels) == (0.5, 7)
    assert okx_books_config(load_settings(influx_url=None)).sample_levels is None  # no InfluxDB: no samples

    market = market_source_config(s)
    assert (market.venues, market.timeframes, market.binance_trade_stream) == (("okx", "bybit", "local"),
                                                                              ("1m", "1h"), "trade")
    assert (market.okx_ws_url, market.okx_business_url, market.binance_ws_url, market.bybit_ws_url) == (
        URLS["okx_ws_url"], "ws://127.0.0.1:7002/ws/v5/business", URLS["binance_ws_url"] + "/",
        URLS["bybit_ws_url"])
    t = market.timing
    assert (t.ping_interval, t.pong_timeout, t.backoff_initial, t.backoff_max) == (11.0, 2.5, 0.25, 9.0)
    assert (market.pairs.redis_url, market.pairs.key, market.pairs.limit, market.pairs.interval) == (
        URLS["redis_url"], "pairs:x", 12, 3.5)

    local = local_config(s)
    assert (local.pairs.redis_url, local.pairs.key, local.pairs.limit, local.pairs.interval, local.batch,
            local.block_ms, local.shards) == (URLS["redis_url"], "pairs:x", 12, 3.5, 50, 3, 2)


def test_influx_and_repair_follow_influx_url_and_kline_backfill() -> None:
    s = load_settings(**URLS, influx_url="http://127.0.0.1:7008", influx_token="tok-secret", influx_org="o",
                      influx_bucket="b", influx_flush_interval=2.5, kline_backfill=600, market_data_venues="okx,local",
                      kline_timeframes="1m,5m", redis_trading_pairs_key="pairs:y", max_trading_pairs=9)
    cfg = influx_config(s)
    assert (cfg.url, cfg.token, cfg.org, cfg.bucket, cfg.flush_interval_ms) == (
        "http://127.0.0.1:7008/", "tok-secret", "o", "b", 2500)
    assert "tok-secret" not in repr(cfg)
    assert influx_enabled(s) and repair_enabled(s)
    repair = repair_config(s)
    assert (repair.venues, repair.timeframes, repair.window_s) == (("okx",), ("1m", "5m"), 600)
    assert repair.rest_urls == {"binance": URLS["binance_rest_url"] + "/", "okx": URLS["okx_rest_url"] + "/",
                                "bybit": URLS["bybit_rest_url"] + "/"}
    assert repair.influx == cfg
    assert "tok-secret" not in repr(repair)
    assert (repair.redis_url, repair.pairs_key, repair.max_pairs) == (URLS["redis_url"], "pairs:y", 9)

    assert not repair_enabled(load_settings(influx_url="http://127.0.0.1:7008", kline_backfill=0))
    unset = load_settings(influx_url=None, kline_backfill=600)
    assert influx_config(unset).url is None and not repair_enabled(unset)
    with capture_logs() as logs:
        assert not influx_enabled(unset)
    assert [e["event"] for e in logs] == ["influx_disabled"]


def test_smtp_config_keeps_the_password_out_of_its_repr() -> None:
    s = load_settings(smtp_host="mail.example", smtp_port=2525, email_from="alerts@example.com", smtp_user="u",
                      smtp_password="pw-secret", smtp_starttls=True, smtp_timeout=4.0)
    cfg = smtp_config(s)
    assert (cfg.host, cfg.port, cfg.sender, cfg.user, cfg.password, cfg.starttls, cfg.timeout) == (
        "mail.example", 2525, "alerts@example.com", "u", "pw-secret", True, 4.0)
    assert "pw-secret" not in repr(cfg)
