"""The browser monitor (web/) in a real headless Chromium against the demo stack.

The stack is the demo's (:class:`cryptoflow.demo.Demo`: a private Redis, the exchange simulator, the SMTP sink,
every dataflow) plus ``cryptoflow serve`` on a fixed free port (so a restarted service is found again at the
same address) serving the built ``web/dist`` at ``/``. History lives in Debian's InfluxDB 1.x, which has no
v2 write API for the dataflows' writer, so the history the pages read (1m klines before now, analysis results,
analysis alerts) is written into it here with the sinks' own point builders; everything live comes from the
dataflows through Redis and the push gateway.

Screenshots of every page at 1440x900 and 390x844 go to ``web/test-artifacts/`` (``WEB_ARTIFACTS``);
``WEB_DOCS_IMG=1`` also refreshes ``docs/img/overview.png`` and ``docs/img/instrument.png``.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from connectors.influx.writer import to_line
from connectors.redis.analysis_sink import alert_points, result_points
from connectors.redis.market_sink import kline_point
from connectors.redis.push_streams import MY_ALERTS, stream_key
from cryptoflow.demo import Demo
from cryptoflow.servers import free_port
from cryptoflow.settings import load_settings
from operators.analysis.engine import AnalysisOutput
from operators.events import AlertEvent, AnalysisResult, BookStatus, Kline
from tests import waiting
from tests.fixtures.browser import DESKTOP, PHONE, OpenPage, WatchedPage
from tests.fixtures.influx import InfluxDB1
from tests.fixtures.service import ServiceProcess, launch_service

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "web" / "dist" / "index.html"
INST = "BTC-USDT"
MINUTE = 60_000
PAGES = {"overview": "/#/", "pairs": "/#/pairs", "instrument": f"/#/instrument/{INST}", "alerts": "/#/alerts",
         "history": "/#/history"}


# A page read that times out on a starved renderer is "not yet": each wait's own deadline decides.
wait_for = partial(waiting.wait_for, every=0.25, not_yet=(PlaywrightTimeout,))


@dataclass
class Stack:
    demo: Demo
    service: ServiceProcess
    port: int
    env: dict[str, str]
    workdir: Path
    redis: redis.Redis
    admin_key: str
    user_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop_service(self) -> int:
        return self.service.stop()

    def start_service(self) -> None:
        self.service = launch_service(self.workdir / "svc-again", self.env, ["--port", str(self.port)])

    def emails(self) -> list[str]:
        return list(self.demo.emails)


def _add_user(env: dict[str, str], name: str, *, admin: bool) -> str:
    """`cryptoflow users add NAME [--admin]`: the key is alone on the last line of stdout."""
    args = [sys.executable, "-m", "cryptoflow.cli", "users", "add", name, *(["--admin"] if admin else [])]
    done = subprocess.run(args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def _seed_history(influx: InfluxDB1, price: Decimal, now_ms: int) -> None:
    """90 closed 1m klines before the current minute, and 30 min of analysis results and two alerts."""
    influx.reset()
    this_minute = now_ms - now_ms % MINUTE
    lines = []
    for i in range(90, 0, -1):
        t = this_minute - i * MINUTE
        drift = Decimal(i % 7 - 3) * price / 10_000
        o, c = price + drift, price - drift / 2
        lines.append(to_line(kline_point(Kline(
            "okx", INST, "1m", t, t + MINUTE, open=o, high=max(o, c) + price / 5000, low=min(o, c) - price / 5000,
            close=c, volume=Decimal("1.5"), quote_volume=Decimal(1), trades=10 + i, closed=True))))
    for i in range(180):
        t = now_ms - (180 - i) * 10_000
        r = AnalysisResult(INST, t, BookStatus.VALID, support_level_1=price * Decimal("0.999"),
                           support_level_2=price * Decimal("0.998"), resistance_level_1=price * Decimal("1.001"),
                           resistance_level_2=price * Decimal("1.002"), large_buy_orders=Decimal(i % 5),
                           large_sell_orders=Decimal(4 - i % 5), depth_anomaly_score=(i % 20) / 5,
                           liquidity_index=0.6 + (i % 10) / 20)
        lines.extend(to_line(p) for p in result_points(AnalysisOutput(r, ())))
    alert = AlertEvent(INST, "depth_anomaly", "warning", 4.2, 4.0, "depth z-score 4.2 over 4", now_ms - 600_000)
    lines.extend(to_line(p) for p in alert_points(AnalysisOutput(
        AnalysisResult(INST, alert.ts_ms, BookStatus.VALID), (alert,))))
    for chunk in range(0, len(lines), 1000):
        influx.write_lines("\n".join(lines[chunk:chunk + 1000]), "ms")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, influxdb1: InfluxDB1) -> Iterator[Stack]:
    if not DIST.exists():
        pytest.fail("web/dist is not built: run `make web` (make test does)")
    workdir = tmp_path_factory.mktemp("webstack")
    demo = Demo(workdir / "demo")
    service: ServiceProcess | None = None
    try:
        # The demo's own service is not started: this stack runs its own (with InfluxDB, on a fixed port).
        demo._start_service = lambda: None  # type: ignore[method-assign]
        demo.start(load_settings())
        client = redis.Redis(port=demo.redis_port, decode_responses=True)
        price = wait_for("an OKX ticker", lambda: client.hget(f"ticker:okx:{INST}", "price"), 60)
        influxdb1.reset()  # the worker's server: another file's points must not show on the history page
        _seed_history(influxdb1, Decimal(price), int(time.time() * 1000))
        port = free_port()
        env = {"REDIS_URL": f"redis://127.0.0.1:{demo.redis_port}/0", "INFLUX_URL": influxdb1.url,
               "INFLUX_BUCKET": influxdb1.database, "DATA_DIR": str(workdir / "data"),
               "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'data' / 'cryptoflow.db'}"}
        service = launch_service(workdir / "svc", env, ["--port", str(port)])
        admin = _add_user(env, "web-admin", admin=True)
        user = _add_user(env, "web-user", admin=False)
        st = Stack(demo, service, port, env, workdir, client, admin, user)
        yield st
        service = st.service
    finally:
        if service is not None:
            service.stop()
        demo.stop()


def shot(page: WatchedPage, artifacts: Path, name: str, *, docs_img: str = "") -> None:
    """The whole page into ``artifacts``; with ``docs_img`` and ``WEB_DOCS_IMG`` set, also the first 1200x760 of
    it as ``docs/img/<docs_img>.png`` (the README's pictures)."""
    page.screenshot(artifacts / f"{name}.png")
    if docs_img and os.environ.get("WEB_DOCS_IMG"):
        page.page.set_viewport_size({"width": 1200, "height": 760})
        time.sleep(1.5)  # the charts redraw at the new size
        page.screenshot(ROOT / "docs" / "img" / f"{docs_img}.png", full_page=False)


def set_key(page: WatchedPage, key: str) -> None:
    """Enter the API key in the settings dialog, as a user does (it is kept in localStorage)."""
    p = page.page
    p.get_by_test_id("open-settings").click()
    _field(p, "api-key").fill(key)
    p.get_by_test_id("settings-save").click()
    p.get_by_test_id("open-settings").filter(has_text="Key").wait_for()


def attr(page: WatchedPage, testid: str, name: str) -> str:
    """The attribute now ("" while the element is not there); one read waits at most 5 s, so a starved renderer
    costs a polling loop one round, not its deadline (``wait_for`` takes the timeout as "not yet")."""
    found = page.page.get_by_test_id(testid)
    return (found.first.get_attribute(name, timeout=5000) or "") if found.count() else ""


def canvas_painted(page: WatchedPage, testid: str) -> int:
    """How many pixels of the first canvas inside ``testid`` are not background (sampled every 4th)."""
    return int(page.page.evaluate(
        """(id) => {
            const c = document.querySelector(`[data-testid="${id}"] canvas`)
            if (!c || !c.width) return 0
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
            let n = 0
            for (let i = 0; i < d.length; i += 16) if (d[i + 3] > 0) n += 1
            return n
        }""", testid))


def _field(page: Any, testid: str) -> Any:
    """The text input of an Element Plus field: el-input puts extra attributes on the <input> itself, other
    components on their wrapper, so accept both."""
    return page.locator(f'input[data-testid="{testid}"], [data-testid="{testid}"] input').first


def test_overview_shows_frames_per_second_within_20_s(stack: Stack, open_page: OpenPage, artifacts: Path) -> None:
    page = open_page(stack.url + PAGES["overview"])
    t0 = time.monotonic()
    wait_for("non-zero frames/s on the overview",
             lambda: float(attr(page, "metric-frames", "data-value") or 0) > 0, 20)
    assert time.monotonic() - t0 <= 20
    assert float(attr(page, "metric-connections", "data-value") or 0) > 0
    assert page.page.get_by_test_id("connection").get_attribute("data-state") == "live"
    time.sleep(2)  # a few more samples on the trend lines
    shot(page, artifacts, "overview-1440", docs_img="overview")
    assert page.errors == []


def test_instrument_page_draws_depth_and_candles_matching_the_kline_hash(
        stack: Stack, open_page: OpenPage, artifacts: Path) -> None:
    page = open_page(stack.url + PAGES["instrument"])
    wait_for("the depth chart's levels", lambda: int(attr(page, "depth-card", "data-levels") or 0) >= 20, 90)
    wait_for("the depth chart drawn", lambda: canvas_painted(page, "depth-card") > 500, 30)
    wait_for("history candles and the live bar", lambda: int(attr(page, "candles-card", "data-bars") or 0) > 60, 90)
    wait_for("the candlestick chart drawn", lambda: canvas_painted(page, "candles-card") > 500, 30)

    def last_close_matches() -> bool:
        fields = stack.redis.hgetall(f"kline:okx:{INST}:1m")
        shown = attr(page, "candles-card", "data-last-close")
        opened = attr(page, "candles-card", "data-last-open")
        from operators.events import iso_ms

        return bool(fields) and shown == fields["close"] and opened.isdigit() and \
            iso_ms(int(opened)) == fields["open_time"]

    # Both sides move with every trade: compare them with the market frozen (the demo's simulator paused).
    control = stack.demo.env["OKX_REST_URL"].rstrip("/") + "/control"
    httpx.post(f"{control}/pause", json={}, timeout=10).raise_for_status()
    try:
        wait_for("the last candle's close equal to the kline: hash", last_close_matches, 60, every=0.1)
    finally:
        httpx.post(f"{control}/resume", json={}, timeout=10).raise_for_status()
    wait_for("trades on the tape", lambda: page.page.locator(".tape-row").count() > 0, 90)
    wait_for("the analysis gauges", lambda: attr(page, "gauge-liquidity", "data-level") != "", 90)
    shot(page, artifacts, "instrument-1440", docs_img="instrument")
    assert page.errors == []


def test_price_alert_added_in_the_ui_fires_by_email_and_live(
        stack: Stack, open_page: OpenPage, artifacts: Path) -> None:
    email = "web-user@example.com"
    page = open_page(stack.url + PAGES["alerts"])
    set_key(page, stack.user_key)
    p = page.page
    _field(p, "alert-email").fill(email)
    # "rises to >=" a hair under the market: the next trade at or above it fires it.
    price = Decimal(stack.redis.hget(f"ticker:okx:{INST}", "price") or "0")
    assert price > 0
    threshold = (price * Decimal("0.9999")).quantize(Decimal("0.01"))
    p.get_by_test_id("alert-direction").get_by_text("rises to").click()
    price_input = _field(p, "alert-price")
    price_input.fill(str(threshold))
    price_input.press("Tab")
    with p.expect_response(lambda r: r.url.endswith("/v1/alerts") and r.request.method == "POST") as created:
        p.get_by_test_id("alert-add").click()
    assert created.value.status == 201, created.value.text()
    alert = created.value.json()
    assert alert["crypto"] == INST and alert["direction"] is True and Decimal(str(alert["price"])) == threshold
    status = p.get_by_test_id(f"alert-status-{alert['id']}")
    status.wait_for()
    wait_for("the alert email at the SMTP sink", lambda: any(f"EMAIL to {email}" in e for e in stack.emails()), 90)
    try:
        wait_for("the page showing the alert fired (no reload)",
                 lambda: status.get_attribute("data-status") == "fired", 30)
    except AssertionError as err:  # which side failed: the push stream, the service's SQL, or the page
        pushed = [f for _, f in stack.redis.xrange(stream_key(MY_ALERTS)) if alert["id"] in str(f)]
        stored = httpx.get(f"{stack.url}/v1/alerts/{alert['id']}", timeout=10,
                           headers={"Authorization": f"Bearer {stack.user_key}"})
        raise AssertionError(f"{err}; @my_alerts entries of it: {pushed}; GET: {stored.status_code} {stored.text}; "
                             f"page console: {page.errors}") from None
    shot(page, artifacts, "alerts-fired-1440")
    assert page.errors == []


def test_an_alert_whose_push_beats_its_post_answer_stays_fired(stack: Stack, open_page: OpenPage) -> None:
    """The matcher can fire an alert, and @my_alerts deliver it, before the POST that created it has answered
    (seen under load). Forced here: the POST's answer is held until the page shows the pushed fire; the answer
    (``active``) must not turn the row back."""
    page = open_page(stack.url + PAGES["alerts"])
    set_key(page, stack.user_key)
    p = page.page
    _field(p, "alert-email").fill("web-race@example.com")
    price = Decimal(stack.redis.hget(f"ticker:okx:{INST}", "price") or "0")
    assert price > 0
    p.get_by_test_id("alert-direction").get_by_text("rises to").click()
    price_input = _field(p, "alert-price")
    price_input.fill(str((price * Decimal("0.9999")).quantize(Decimal("0.01"))))
    price_input.press("Tab")
    held: dict[str, Any] = {}

    def hold_until_pushed(route: Any) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        answer = route.fetch()
        alert_id = held["id"] = answer.json()["id"]
        wait_for("the pushed fire on the page before the POST's answer",
                 lambda: attr(page, f"alert-status-{alert_id}", "data-status") == "fired", 60)
        route.fulfill(response=answer)

    p.route("**/v1/alerts", hold_until_pushed)
    with p.expect_response(lambda r: r.url.endswith("/v1/alerts") and r.request.method == "POST") as created:
        p.get_by_test_id("alert-add").click()
    assert created.value.status == 201
    p.unroute("**/v1/alerts")
    p.get_by_text(f"alert {held['id']} added").wait_for()  # create() has handled the answer
    assert attr(page, f"alert-status-{held['id']}", "data-status") == "fired"
    assert page.errors == []


def test_pairs_page_shows_book_status_and_admin_adds_and_removes_a_pair(
        stack: Stack, open_page: OpenPage, artifacts: Path) -> None:
    page = open_page(stack.url + PAGES["pairs"])
    p = page.page
    for inst in ("BTC-USDT", "ETH-USDT", "SOL-USDT"):
        wait_for(f"{inst} valid", lambda i=inst: p.get_by_test_id(f"status-{i}").get_attribute("data-status")
                 == "valid", 30)
    set_key(page, stack.admin_key)
    _field(p, "pair-input").fill("DOGE-USDT")
    p.get_by_test_id("pair-add").click()
    wait_for("DOGE-USDT in config:trading_pairs", lambda: stack.redis.sismember("config:trading_pairs", "DOGE-USDT"),
             10)
    wait_for("DOGE-USDT's book valid on the page",
             lambda: p.get_by_test_id("status-DOGE-USDT").count() == 1
             and p.get_by_test_id("status-DOGE-USDT").get_attribute("data-status") == "valid", 60)
    shot(page, artifacts, "pairs-added-1440")
    p.get_by_test_id("remove-DOGE-USDT").click()
    p.get_by_role("button", name="Yes").click()
    wait_for("DOGE-USDT removed", lambda: not stack.redis.sismember("config:trading_pairs", "DOGE-USDT"), 30)
    wait_for("DOGE-USDT gone from the table", lambda: p.get_by_test_id("status-DOGE-USDT").count() == 0, 30)
    # A new pair has no book for a moment: its GET /v1/orderbook answers 404, which Chromium logs.
    assert [e for e in page.errors if "status of 404" not in e] == []


def test_history_page_shows_trends_and_exports_csv(stack: Stack, open_page: OpenPage, tmp_path: Path) -> None:
    page = open_page(stack.url + PAGES["history"], accept_downloads=True)
    wait_for("analysis history points", lambda: int(attr(page, "history-chart", "data-rows") or 0) >= 100, 90)
    wait_for("the trend chart drawn", lambda: canvas_painted(page, "history-chart") > 500, 30)
    with page.page.expect_download() as download:
        page.page.get_by_test_id("history-csv").click()
    saved = tmp_path / "history.csv"
    download.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(rows) >= 100
    assert {r["instrument_id"] for r in rows} == {INST}
    assert {r["analysis_type"] for r in rows} == {"support_resistance"}
    assert all(r["support_level_1"] for r in rows)
    assert page.errors == []


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["1440x900", "390x844"])
def test_every_page_renders_without_console_errors(
        stack: Stack, open_page: OpenPage, artifacts: Path, size: tuple[int, int]) -> None:
    page = open_page(stack.url + PAGES["overview"], *size)
    set_key(page, stack.user_key)
    for name, path in PAGES.items():
        page.page.goto(stack.url + path)
        page.page.get_by_test_id(f"page-{name}").wait_for()
        time.sleep(3)  # live data in, charts drawn
        # nothing sticks out sideways at 390 px
        overflow = page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {size[0]} px is {overflow} px too wide"
        shot(page, artifacts, f"{name}-{size[0]}x{size[1]}")
    assert page.errors == []


def test_gateway_loss_shows_reconnecting_and_recovers(stack: Stack, open_page: OpenPage, artifacts: Path) -> None:
    page = open_page(stack.url + PAGES["instrument"])
    p = page.page
    tag = p.get_by_test_id("connection")
    wait_for("live", lambda: tag.get_attribute("data-state") == "live", 60)
    wait_for("trades on the tape", lambda: p.locator(".tape-row").count() > 0, 90)
    assert stack.stop_service() == 0
    wait_for("reconnecting shown", lambda: tag.get_attribute("data-state") == "reconnecting", 60)
    assert "reconnecting" in tag.inner_text()
    assert "reconnecting" in p.get_by_test_id("reconnecting-banner").inner_text()
    shot(page, artifacts, "reconnecting-1440")
    time.sleep(3)  # a few failed tries: the backoff keeps going
    stack.start_service()
    wait_for("live again", lambda: tag.get_attribute("data-state") == "live", 90)
    page.errors.clear()  # refused connections while the service was down are expected console errors
    first = p.locator(".tape-row").first.inner_text()
    wait_for("new trades after the recovery", lambda: p.locator(".tape-row").first.inner_text() != first, 90)
    wait_for("the banner gone", lambda: p.get_by_test_id("reconnecting-banner").count() == 0, 5)
    with httpx.Client(base_url=stack.url, timeout=10) as api:
        assert api.get("/v1/pairs").status_code == 200
    assert page.errors == []
