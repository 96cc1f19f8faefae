"""One validated, frozen settings object for every dataflow and command.

Every variable of the product contract (``docs/CONTRACTS.md``) and every knob this project adds is a field
here, read from the environment or a ``.env`` file. Connectors never read the environment: they are handed
this object (or the few values they need) by the dataflow that wires them.

A bad value stops start-up with ONE line that names the variable and the reason, exit code 2
(:func:`load_settings`). Secrets are ``SecretStr`` and URLs with passwords are masked wherever they are shown.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, AnyUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import MultiHostUrl
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from connectors.bybit.books import check_book_depth
from connectors.redis.client import SENTINEL_SCHEME, parse_sentinel_url


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class OrderbookSource(StrEnum):
    REDIS = "redis"
    WS = "ws"


class OkxBookChannel(StrEnum):
    BOOKS = "books"
    BOOKS_L2_TBT = "books-l2-tbt"
    BOOKS50_L2_TBT = "books50-l2-tbt"


class Venue(StrEnum):
    OKX = "okx"
    BINANCE = "binance"
    BYBIT = "bybit"


class BinanceTradeStream(StrEnum):
    AGG_TRADE = "aggTrade"
    TRADE = "trade"


TIMEFRAMES: dict[str, int] = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000,
                              "4h": 14_400_000, "1d": 86_400_000}
"""Kline timeframes the pipeline knows, in milliseconds (windows are aligned to UTC midnight)."""

PositiveSeconds = Annotated[float, Field(gt=0)]
CommaList = Annotated[tuple[str, ...], NoDecode]


LOCAL_VENUE = "local"


def _bybit_depth(depth: int, info: ValidationInfo) -> int:
    return check_book_depth(depth, str(info.data.get("bybit_ws_url", "")))  # spot or linear, by the URL


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """All configuration; field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True, case_sensitive=False,
    )

    # --- Redis and the monitored set -------------------------------------------------------------------
    # redis+sentinel://h1:26379,h2:26379/<service>/<db> names several hosts: a MultiHostUrl (AnyUrl takes one)
    redis_url: MultiHostUrl = MultiHostUrl("redis://127.0.0.1:6379/0")
    redis_trading_pairs_key: str = Field("config:trading_pairs", min_length=1)
    trading_pairs_poll_interval: PositiveSeconds = 20.0
    max_trading_pairs: int = Field(10, ge=1, le=1000)

    # --- Venues (defaults are the real exchanges; tests and the demo point them at the simulator) ------
    okx_ws_url: AnyUrl = AnyUrl("wss://ws.okx.com:8443/ws/v5/public")
    okx_ws_business_url: AnyUrl | None = None  # default: OKX_WS_URL with /public -> /business
    okx_rest_url: AnyUrl = AnyUrl("https://www.okx.com")
    binance_ws_url: AnyUrl = AnyUrl("wss://stream.binance.com:9443")
    binance_rest_url: AnyUrl = AnyUrl("https://api.binance.com")
    bybit_ws_url: AnyUrl = AnyUrl("wss://stream.bybit.com/v5/public/spot")

    # --- WebSocket connection behaviour (shared by every venue) ----------------------------------------
    okx_book_channel: OkxBookChannel = OkxBookChannel.BOOKS
    okx_pairs_per_connection: int = Field(5, ge=1, le=100)
    ws_ping_interval: PositiveSeconds = 25.0  # send a ping after this long without a frame
    ws_pong_timeout: PositiveSeconds = 5.0  # no pong within this -> reconnect
    ws_stale_after: PositiveSeconds = 30.0  # a book with no frame for this long is `stale`
    ws_backoff_initial: PositiveSeconds = 0.5
    ws_backoff_max: PositiveSeconds = 30.0

    # --- InfluxDB (optional: unset INFLUX_URL runs without it) -------------------------------------------
    influx_url: AnyUrl | None = None
    influx_token: SecretStr = SecretStr("")
    influx_org: str = "cryptoflow"
    influx_bucket: str = "cryptoflow"
    influx_book_levels: int = Field(20, ge=1, le=400)
    influx_book_interval: PositiveSeconds = 1.0
    influx_flush_interval: PositiveSeconds = 1.0  # the writer sends buffered points at least this often

    # --- Order-book buffer and analysis ------------------------------------------------------------------
    orderbook_buffer_key: str = Field("okex_orderbook", min_length=1)
    orderbook_source: OrderbookSource = OrderbookSource.REDIS
    orderbook_buffer_max: int = Field(100_000, ge=0)  # LTRIM cap on the buffer list; 0 = uncapped
    orderbook_hash_interval: float = Field(0.0, ge=0, le=3600)  # min s between orderbook:{inst} level writes
    book_venues: Annotated[tuple[Venue, ...], NoDecode, Field(min_length=1)] = (Venue.OKX,)  # the collector's
    bybit_book_depth: Annotated[int, AfterValidator(_bybit_depth)] = 50  # orderbook.{depth}: spot 1/50/200, linear 500
    bbo_max_age_ms: int = Field(5000, ge=100, le=600_000)  # bbo:{inst} leaves out a venue silent for longer
    analysis_bin_width: Decimal | None = Field(None, gt=0)  # default: scaled to price (see README)
    analysis_large_order_k: float = Field(5.0, gt=0)
    analysis_large_order_min_size: dict[str, Decimal] = Field(default_factory=dict)  # JSON {"BTC-USDT": "5"}
    analysis_trend_margin: float = Field(0.20, ge=0)
    analysis_trend_hold: float = Field(10.0, ge=0)  # seconds one side must lead before a trend is called
    analysis_band_pct: float = Field(1.0, gt=0, le=50)
    analysis_depth_window: PositiveSeconds = 60.0
    analysis_depth_warning_z: float = Field(2.0, gt=0)
    analysis_depth_alert_z: float = Field(3.0, gt=0)
    analysis_liquidity_window: PositiveSeconds = 900.0
    analysis_liquidity_warning: float = Field(0.7, gt=0)
    analysis_liquidity_alert: float = Field(0.5, gt=0)
    analysis_alert_cooldown: float = Field(300.0, ge=0)
    analysis_alert_emails: CommaList = ()
    alerts_history_max: int = Field(1000, ge=1)
    analysis_influx_interval: float = Field(1.0, ge=0)  # analysis_results points per instrument at most every N s
    analysis_window_buckets: int = Field(60, ge=2, le=10_000)  # time buckets per sliding window (state size)
    analysis_window_min_fill: float = Field(0.5, gt=0, le=1)  # window statistics once this share of buckets has data
    analysis_depth_min_std_pct: float = Field(0.1, ge=0)  # depth z-score deviation floor, % of the window mean

    # --- Market data ----------------------------------------------------------------------------------------
    market_data_venues: CommaList = ("okx", "binance", "bybit")
    binance_trade_stream: BinanceTradeStream = BinanceTradeStream.AGG_TRADE
    kline_timeframes: CommaList = ("1m", "5m", "1h", "1d")
    kline_allowed_lateness: float = Field(2.0, ge=0)
    price_alerts_enabled: bool = True
    price_alert_max_age: PositiveSeconds = 5.0  # a trade lagging its receipt by more fires no alert
    # The exchange's own trades (`local`): entries per stream per XREAD, and its BLOCK, short so that the
    # worker (every other step on it) is never held long when the streams are idle
    local_stream_batch: int = Field(1000, ge=1, le=100_000)
    local_stream_block_ms: int = Field(2, ge=1, le=100)
    local_stream_shards: int = Field(1, ge=1, le=64)  # source partitions; each owns the streams hashed to it

    # --- Email ------------------------------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", min_length=1)
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_timeout: PositiveSeconds = 10.0
    email_from: str = "cryptoflow@localhost"
    email_max_attempts: int = Field(5, ge=1)
    email_backoff_initial: PositiveSeconds = 1.0
    email_backoff_max: PositiveSeconds = 60.0
    email_concurrency: int = Field(2, ge=1, le=32)  # SMTP sender threads (each one connection)
    email_max_in_flight: int = Field(100, ge=1)  # jobs held in queue:email:processing:* at once
    # Reliable-list sources (buffer list, email queue): an element delivered this many times without being
    # finished (acked / covered by a committed snapshot) goes to {key}:dead instead of crash-looping.
    list_max_deliveries: int = Field(5, ge=2, le=100)

    # --- The service: `cryptoflow serve` (REST, push gateway, browser monitor) ---------------------------
    data_dir: str = Field("data", min_length=1)  # relative to the working directory; holds the SQLite file
    database_url: str | None = None  # default: sqlite+aiosqlite:///<DATA_DIR>/cryptoflow.db
    api_public_reads: bool = True  # market-data reads need no API key
    api_max_body: int = Field(65_536, ge=1024)  # request bodies over this many bytes are refused (413)
    alert_sync_interval: PositiveSeconds = 10.0  # the reconciler makes the Redis index equal SQL this often
    stream_maxlen: int = Field(10_000, ge=100)  # push streams are capped with MAXLEN ~ this
    push_max_subscriptions: int = Field(100, ge=1)  # per WebSocket connection
    push_max_connections_per_ip: int = Field(100, ge=1)
    push_max_message_bytes: int = Field(4096, ge=256)  # a client message larger than this is refused
    push_queue_max: int = Field(1000, ge=10)  # event-channel messages buffered per slow client before closing it

    # --- History -------------------------------------------------------------------
    bybit_rest_url: AnyUrl = AnyUrl("https://api.bybit.com")
    kline_backfill: float = Field(0.0, ge=0)  # seconds of history market_data backfills at start (0 = off)

    # --- Logging and metrics ------------------------------------------------------------------------------
    metrics_port: int = Field(0, ge=0, le=65535)  # a dataflow process serves Prometheus /metrics here (0 = off)
    log_level: str = "INFO"
    log_format: LogFormat | None = None  # default: console on a terminal, JSON otherwise

    @field_validator("market_data_venues", "kline_timeframes", "analysis_alert_emails", "book_venues", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("market_data_venues")
    @classmethod
    def _market_venues(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # `local`: the exchange's own trades from Redis Streams `trades:{inst}` (market data only: no books)
        known = {v.value for v in Venue} | {LOCAL_VENUE}
        bad = [v for v in value if v not in known]
        if bad:
            msg = f"unknown venue {bad[0]!r}, expected a comma list of {sorted(known)}"
            raise ValueError(msg)
        return value

    @field_validator("kline_timeframes")
    @classmethod
    def _timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [tf for tf in value if tf not in TIMEFRAMES]
        if bad or not value:
            msg = f"unknown timeframe {bad[0] if bad else ''!r}, expected a comma list of {list(TIMEFRAMES)}"
            raise ValueError(msg)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if not isinstance(value, str) or value.upper() not in levels:
            msg = f"expected one of {', '.join(levels)}"
            raise ValueError(msg)
        return value.upper()

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if value in ("", None):
            return None
        if isinstance(value, str) and value.lower() in ("json", "console"):
            return value.lower()
        msg = "expected 'json' or 'console'"
        raise ValueError(msg)

    @field_validator("analysis_alert_emails")
    @classmethod
    def _recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Checked at start-up (one line, exit 2) rather than dead-lettering every analysis alert email later.
        from operators.alerts import check_email

        return tuple(check_email(address) for address in value)

    @field_validator("email_from", "smtp_user")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        # EMAIL_FROM becomes the From header: a CR/LF would be a header injection (and every send would fail).
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            msg = "must be one line without control characters"
            raise ValueError(msg)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: MultiHostUrl) -> MultiHostUrl:
        if value.scheme == SENTINEL_SCHEME:
            parse_sentinel_url(str(value))  # ValueError: names what is wrong, never the password
        elif value.scheme not in ("redis", "rediss", "unix"):
            msg = f"expected a redis:// or {SENTINEL_SCHEME}:// URL, got scheme {value.scheme!r}"
            raise ValueError(msg)
        return value

    @field_validator("okx_ws_url", "okx_ws_business_url", "binance_ws_url", "bybit_ws_url")
    @classmethod
    def _ws_scheme(cls, value: AnyUrl | None) -> AnyUrl | None:
        if value is not None and value.scheme not in ("ws", "wss"):
            msg = f"expected a ws:// or wss:// URL, got scheme {value.scheme!r}"
            raise ValueError(msg)
        return value

    @field_validator("okx_rest_url", "binance_rest_url", "bybit_rest_url", "influx_url")
    @classmethod
    def _http_scheme(cls, value: AnyUrl | None) -> AnyUrl | None:
        if value is not None and value.scheme not in ("http", "https"):
            msg = f"expected an http:// or https:// URL, got scheme {value.scheme!r}"
            raise ValueError(msg)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            msg = "expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST/DB"
            raise ValueError(msg)
        return value

    # --- Derived values ------------------------------------------------------------------------------------
    @property
    def okx_business_url(self) -> str:
        if self.okx_ws_business_url is not None:
            return str(self.okx_ws_business_url)
        url = str(self.okx_ws_url)
        return url[: -len("/public")] + "/business" if url.endswith("/public") else url

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the alerts database (``DATABASE_URL`` or the SQLite file in ``DATA_DIR``)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'cryptoflow.db'}"

    @property
    def influx_enabled(self) -> bool:
        return self.influx_url is not None

    def masked(self) -> dict[str, Any]:
        """Every setting as shown in logs and `cryptoflow config`: secrets and URL passwords masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "***" if value.get_secret_value() else ""
            elif isinstance(value, AnyUrl | MultiHostUrl) or (name.endswith("_url") and isinstance(value, str)):
                shown[name] = mask_url(str(value))
            elif isinstance(value, StrEnum):
                shown[name] = value.value
            else:
                shown[name] = value
        return shown

    def __repr_args__(self) -> Any:
        # repr()/str() of the settings (a traceback, a debugger, a log line) must not show URL passwords;
        # SecretStr fields already render as '**********'.
        for name, value in super().__repr_args__():
            yield name, mask_url(str(value)) if isinstance(value, AnyUrl | MultiHostUrl) else value


SECRET_FIELDS = frozenset({"influx_token", "smtp_password"})
URL_FIELDS = frozenset(
    name for name, f in Settings.model_fields.items() if "Url" in str(f.annotation) or name.endswith("_url")
)


_USERINFO = re.compile(r"(?P<head>//[^/@:]*:)[^@]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&][^=&#]*password=)[^&#]*", re.IGNORECASE)  # ?sentinel_password=...


def mask_url(url: str) -> str:
    """``redis://user:pw@host`` -> ``redis://user:***@host`` (and ``?sentinel_password=***``); URLs without a
    password are unchanged."""
    url = _QUERY_PASSWORD.sub(r"\g<head>***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable (e.g. a broken IPv6 host): mask whatever sits between ':' and '@'
        return _USERINFO.sub(r"\g<head>***@", url)
    if password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class SettingsError(Exception):
    """A setting failed validation; ``str()`` is the one line shown to the user."""


def describe_error(err: ValidationError) -> str:
    """One line naming the (first) bad variable and why, never echoing a secret."""
    first = err.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "settings"
    reason = first["msg"].removeprefix("Value error, ")
    shown = ""
    if name not in SECRET_FIELDS and "input" in first and not isinstance(first["input"], dict):
        value = str(first["input"])
        shown = f" (got {mask_url(value) if name in URL_FIELDS else value!r})"
    more = len(err.errors()) - 1
    tail = f"; {more} more invalid setting(s)" if more > 0 else ""
    return f"invalid setting {name.upper()}: {reason}{shown}{tail}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise :class:`SettingsError` with the one-line reason."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(describe_error(err)) from None
    except SourceError as err:  # a value pydantic-settings could not decode (e.g. bad JSON for a dict setting)
        found = re.search(r'field "(\w+)"', str(err))
        name = found.group(1).upper() if found else "settings"
        msg = f"invalid setting {name}: expected a JSON value ({err})"
        raise SettingsError(msg) from None


def settings_or_exit(**overrides: Any) -> Settings:
    """For entry points: on a bad setting print one line to stderr and exit with status 2."""
    try:
        return load_settings(**overrides)
    except SettingsError as err:
        print(f"cryptoflow: {err}", file=sys.stderr)
        raise SystemExit(2) from None
