"""The line-protocol serializer against influxdb-client's Point, a real InfluxDB 1.x, and VictoriaMetrics."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision
from structlog.testing import capture_logs

from connectors.influx.sync import InfluxWriteError, SyncInfluxSink, SyncInfluxWriter
from connectors.influx.writer import InfluxPoint, InfluxWriter, to_line
from cryptoflow.connector_configs import influx_config
from cryptoflow.servers import free_port
from cryptoflow.settings import load_settings

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00#"), min_size=1, max_size=12)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1), st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)


def library_line(p: InfluxPoint) -> str:
    point = Point(p.measurement).time(p.ts_ms, WritePrecision.MS)
    for k, v in p.tags:
        point.tag(k, v)
    for k, v in p.fields:
        point.field(k, v)
    return point.to_line_protocol()


@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(names, values, min_size=1, max_size=4),
    ts=st.integers(0, 2**52),
)
def test_to_line_matches_influxdb_client(measurement, tags, fields, ts):
    point = InfluxPoint(measurement, tuple(tags.items()), tuple(fields.items()), ts)
    assert to_line(point) == library_line(point)


def test_decimal_is_never_written_in_exponent_form():
    fields = (("volume", Decimal("1E+5")), ("low", Decimal("0.00000001")))
    point = InfluxPoint("kline", (("symbol", "BTC-USDT"),), fields, 1)
    assert to_line(point) == "kline,symbol=BTC-USDT low=0.00000001,volume=100000 1"


def test_nothing_to_write_gives_empty_line():
    assert to_line(InfluxPoint("m", (("a", "b"),), (("x", None), ("y", float("nan"))), 1)) == ""


def test_lines_read_back_from_influxdb1(influxdb1):
    influxdb1.reset()
    tricky = 'he said "hi", then \\ left\nnew line'
    points = [
        InfluxPoint("alerts", (("instrument_id", "BTC-USDT"), ("alert_type", "depth anomaly"), ("level", "a=b,c")),
                    (("value", 2.5), ("threshold", 2), ("message", tricky), ("ok", True)), 1_628_952_360_000),
        InfluxPoint("kline", (("exchange", "okx"), ("symbol", "ETH-USDT"), ("timeframe", "1m")),
                    (("close", Decimal("3012.34")), ("trades", 17)), 1_628_952_420_000),
    ]
    influxdb1.write_lines("\n".join(map(to_line, points)), precision="ms")
    [alert] = influxdb1.query('SELECT * FROM alerts')
    assert alert["alert_type"] == "depth anomaly" and alert["level"] == "a=b,c"
    assert alert["message"] == tricky and alert["value"] == 2.5 and alert["threshold"] == 2 and alert["ok"] is True
    assert alert["time"] == 1_628_952_360_000 * 1_000_000
    [kline] = influxdb1.query("SELECT * FROM kline")
    assert kline["close"] == pytest.approx(3012.34) and kline["trades"] == 17 and kline["symbol"] == "ETH-USDT"


def test_writer_to_victoria_is_idempotent(victoria):
    settings = load_settings(influx_url=victoria.url, influx_bucket="b", influx_org="o")
    writer = InfluxWriter(str(settings.influx_url), "", "o", "b", flush_interval_ms=100)
    tags = (("exchange", "binance"), ("symbol", "IDEM-USDT"), ("timeframe", "1m"))
    writer.write([InfluxPoint("kline", tags, (("close", 1.5),), 1_700_000_000_000)])
    writer.write([InfluxPoint("kline", tags, (("close", 1.5),), 1_700_000_000_000)])  # rewrite after recovery
    writer.write([InfluxPoint("kline", tags, (("close", 2.5),), 1_700_000_060_000)])
    writer.close()
    assert writer.points_written == 3 and writer.points_failed == 0
    assert victoria.series("kline", "close", symbol="IDEM-USDT") == {1_700_000_000_000: 1.5, 1_700_000_060_000: 2.5}


def test_sync_writer_has_written_when_it_returns_and_says_when_influxdb_did_not(victoria):
    tags = (("exchange", "okx"), ("symbol", "SYNC-USDT"), ("timeframe", "1m"))
    points = [InfluxPoint("kline", tags, (("close", 1.5),), 1_700_000_000_000),
              InfluxPoint("kline", tags, (("close", None),), 1_700_000_060_000)]  # no field: not written
    writer = SyncInfluxWriter(victoria.url, "", "o", "b")
    writer.write(points)
    writer.close()
    assert writer.points_written == 1
    assert victoria.series("kline", "close", symbol="SYNC-USDT") == {1_700_000_000_000: 1.5}
    down = SyncInfluxWriter(f"http://127.0.0.1:{free_port()}", "", "o", "b")
    with pytest.raises(InfluxWriteError, match=r"^InfluxDB at http://127\.0\.0\.1:\d+ did not take 1 points: "):
        down.write(points)
    down.close()
    assert down.points_written == 0


def test_sync_sink_drops_a_batch_influxdb_never_takes_and_says_so():
    settings = load_settings(influx_url=f"http://127.0.0.1:{free_port()}", influx_bucket="b", influx_org="o")
    part = SyncInfluxSink(influx_config(settings), max_wait_s=0.2).build_part("influx_klines", "0", None)
    tags = (("exchange", "okx"), ("symbol", "GONE-USDT"), ("timeframe", "1m"))
    with capture_logs() as logs:
        part.write_batch([[InfluxPoint("kline", tags, (("close", 1.5),), 1_700_000_000_000)]])  # returns: dropped
    part.close()
    events = [e["event"] for e in logs]
    assert "influx_write_retry" in events and events[-1] == "influx_points_dropped"
    assert logs[-1]["points"] == 1 and "did not take 1 points" in logs[-1]["error"]
