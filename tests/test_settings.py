"""Settings: defaults, one-line errors with exit code 2 for each kind of bad value, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cryptoflow.settings import Settings, SettingsError, load_settings, mask_url


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    return subprocess.run([sys.executable, "-m", "cryptoflow.cli", *(args or ("status",))],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False)


def test_defaults_point_at_the_real_exchanges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    s = Settings()
    assert str(s.okx_ws_url) == "wss://ws.okx.com:8443/ws/v5/public"
    assert s.okx_business_url == "wss://ws.okx.com:8443/ws/v5/business"
    assert s.redis_trading_pairs_key == "config:trading_pairs"
    assert s.trading_pairs_poll_interval == 20 and s.max_trading_pairs == 10
    assert s.orderbook_buffer_key == "okex_orderbook" and s.influx_url is None
    assert s.kline_timeframes == ("1m", "5m", "1h", "1d")
    assert s.market_data_venues == ("okx", "binance", "bybit")


BAD = [
    ("TRADING_PAIRS_POLL_INTERVAL", "abc", "valid number"),  # a number that is not a number
    ("MAX_TRADING_PAIRS", "ten", "valid integer"),
    ("REDIS_URL", "not a url", "valid URL"),  # a malformed URL
    ("REDIS_URL", "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380", "expected /<service>/<db>"),
    ("REDIS_URL", "redis+sentinel://127.0.0.1:x/mymaster/0", "invalid port number"),
    ("REDIS_URL", "http://127.0.0.1:6379/0", "redis+sentinel://"),
    ("OKX_WS_URL", "http://example.test/ws", "ws:// or wss://"),
    ("TRADING_PAIRS_POLL_INTERVAL", "-5", "greater than 0"),  # a negative interval
    ("LOG_FORMAT", "xml", "'json' or 'console'"),  # an unknown log format
    ("LOG_LEVEL", "loud", "one of DEBUG"),
    ("MARKET_DATA_VENUES", "okx,ftx", "unknown venue 'ftx'"),
    ("ORDERBOOK_SOURCE", "kafka", "'redis' or 'ws'"),
    ("PRICE_ALERTS_ENABLED", "maybe", "valid boolean"),
    ("ANALYSIS_LARGE_ORDER_MIN_SIZE", "notjson", "expected a JSON value"),  # pydantic-settings' decode error
    ("EMAIL_FROM", "a@b.example\nBcc: victim@c.example", "one line"),  # header injection through the config
    ("ANALYSIS_ALERT_EMAILS", "ops@example.com,nobody", "not a valid address 'nobody'"),
]


@pytest.mark.parametrize(("var", "value", "reason"), BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_bad_setting_stops_with_one_line_and_exit_2(var: str, value: str, reason: str) -> None:
    proc = run_cli({var: value})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"cryptoflow: invalid setting {var}: ")
    assert reason in lines[0]
    assert proc.stdout == ""


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(smtp_password=["not", "a", "string"])
    assert "not" not in str(err.value) and "SMTP_PASSWORD" in str(err.value)
    proc = run_cli({"REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0", "MAX_TRADING_PAIRS": "x"})
    assert proc.returncode == 2 and "hunter2" not in proc.stderr
    proc = run_cli({"REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0"})
    assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr and "hunter2" not in proc.stderr
    proc = run_cli({"REDIS_URL": "redis://user:hunter2@[::1/0"})  # a URL urllib cannot even split
    assert proc.returncode == 2 and "hunter2" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_masked_view_hides_secrets() -> None:
    s = load_settings(influx_token="tok-123", smtp_password="pw-456", redis_url="redis://u:pw-789@h:6379/0")
    shown = str(s.masked())
    assert "tok-123" not in shown and "pw-456" not in shown and "pw-789" not in shown
    assert s.masked()["redis_url"] == "redis://u:***@h:6379/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
    assert "tok-123" not in repr(s)
    assert "pw-789" not in repr(s) and "pw-789" not in str(s) and "redis://u:***@h:6379/0" in repr(s)


def test_redis_url_takes_sentinel_with_secrets_masked() -> None:
    url = "redis+sentinel://:pw-789@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?sentinel_password=sp-456"
    s = load_settings(redis_url=url)
    assert str(s.redis_url) == url  # handed to connectors.redis.client unchanged
    assert s.masked()["redis_url"] == ("redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"
                                       "?sentinel_password=***")
    for shown in (repr(s), str(s), str(s.masked())):
        assert "pw-789" not in shown and "sp-456" not in shown
    assert str(load_settings(redis_url="redis+sentinel://sentinel.example/mymaster").redis_url) == \
        "redis+sentinel://sentinel.example/mymaster"


DATAFLOWS = ["orderbook_collector", "orderbook_analysis", "market_data", "email_sender"]


@pytest.mark.parametrize("name", DATAFLOWS)
def test_each_dataflow_refuses_a_bad_setting_with_one_line(name: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", f"dataflows.{name}"],
                          env={**clean, "INFLUX_BOOK_INTERVAL": "-1"}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cryptoflow: invalid setting INFLUX_BOOK_INTERVAL: Input should be greater than 0 (got '-1')"
    ]
