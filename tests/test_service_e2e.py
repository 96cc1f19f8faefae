"""Issue 11's end-to-end path, every part real: an alert made over HTTP (uvicorn) near the simulator's price is
fired by `market_data`'s Lua matching, its email reaches the SMTP server through `email_sender`, and the API
then shows it fired, with `fired_at` and `fired_price` read from the SQL record."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptoflow.servers import stop_process
from tests.dataflow_helpers import start_dataflow
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def dataflows(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc)


def test_an_alert_made_over_http_fires_mails_and_reads_back_fired_from_sql(
        start_simulator: Any, redis_server: Any, redis_db: Any, smtp_server: Any, start_service: Any,
        dataflows: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "5", "--rate", "20")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    db_file = tmp_path / "alerts.db"
    env = {**sim.env(), "REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite+aiosqlite:///{db_file}",
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_server.port), "LOG_FORMAT": "json",
           "MARKET_DATA_VENUES": "okx", "KLINE_TIMEFRAMES": "1m", "TRADING_PAIRS_POLL_INTERVAL": "0.5",
           "ALERT_SYNC_INTERVAL": "0.5"}
    added = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "users", "add", "alice"], cwd=tmp_path,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=True)
    key = added.stdout.strip().splitlines()[-1]
    service = start_service(env)
    dataflows += [start_dataflow(name, env, tmp_path / f"{name}.log") for name in ("market_data", "email_sender")]
    price = Decimal(wait_for("an OKX ticker", lambda: redis_db.hget("ticker:okx:BTC-USDT", "price"), timeout=90))

    # Just under the price, firing upwards: the next trade at or above it fires the alert.
    threshold = (price * Decimal("0.999")).quantize(Decimal("0.1"))
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.url, headers=auth, timeout=30) as http:
        made = http.post("/v1/alerts", json={"price": float(threshold), "crypto": "BTC-USDT", "direction": True,
                                             "email": "alice@example.com"})
        assert made.status_code == 201, made.text
        alert = made.json()
        assert alert["status"] == "active" and Decimal(alert["price"]) == threshold

        mail = wait_for("the alert's email", lambda: next(
            (m for m in smtp_server.messages if alert["id"] in m.get_payload()), None), timeout=90)
        assert mail["To"] == "alice@example.com"

        shown = wait_for("fired over the API", lambda: (a := http.get(f"/v1/alerts/{alert['id']}").json())
                         and a["status"] == "fired" and a)
    assert Decimal(shown["fired_price"]) >= threshold
    assert shown["fired_price"] in mail["Subject"]  # the subject names the trigger price
    row = sqlite3.connect(db_file).execute(
        "SELECT status, fired_price, fired_at FROM alerts WHERE id = ?", (alert["id"],)).fetchone()
    assert row[0] == "fired" and row[1] == shown["fired_price"] and row[2] is not None
    assert len([m for m in smtp_server.messages if alert["id"] in m.get_payload()]) == 1
