"""The /ws protocol's parsing: typed messages, one error per kind of junk, channel names, stream ids."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.push.channels import parse_channel, parse_id
from service.push.protocol import (
    Auth,
    Code,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    event_frame,
    parse_message,
)


def test_messages_parse_to_typed_values() -> None:
    assert parse_message('{"op":"ping"}', 100) == Ping()
    assert parse_message(b'{"op":"subscribe","channel":"BTC-USDT@depth","since":"1-2"}', 100) == \
        Subscribe("BTC-USDT@depth", "1-2")
    assert parse_message('{"op":"unsubscribe","channel":"@alerts"}', 100) == Unsubscribe("@alerts")
    assert parse_message('{"op":"auth","token":"k"}', 100) == Auth("k")


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", Code.MALFORMED),
    ("[1,2]", Code.MALFORMED),
    ('{"channel":"x"}', Code.MALFORMED),
    ('{"op":"subscribe"}', Code.MALFORMED),
    ('{"op":"subscribe","channel":5}', Code.MALFORMED),
    ('{"op":"ping","extra":1}', Code.MALFORMED),
    ('{"op":"order","side":"buy"}', Code.UNKNOWN_OP),
    ('{"op":7}', Code.MALFORMED),
    ("x" * 101, Code.TOO_LARGE),
])
def test_junk_is_one_typed_error(raw: str, code: Code) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_message(raw, 100)
    assert err.value.code == code
    reply = orjson.loads(err.value.frame())
    assert reply["code"] == int(code) and isinstance(reply["msg"], str) and reply["msg"]


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_input_is_a_message_or_a_protocol_error(raw: str | bytes) -> None:
    try:
        parse_message(raw, 200)
    except ProtocolError as err:
        assert err.code in set(Code)


@pytest.mark.parametrize(("name", "kind", "inst"), [
    ("BTC-USDT@depth", "depth", "BTC-USDT"),
    ("BTC-USDT@depth5", "state", "BTC-USDT"),
    ("BTC-USD-220325-40000-C@depth20", "state", "BTC-USD-220325-40000-C"),
    ("ETH-USDT@trades", "event", "ETH-USDT"),
    ("okx:BTC-USDT@ticker", "state", "BTC-USDT"),
    ("binance:BTC-USDT@kline_1m", "state", "BTC-USDT"),
    ("BTC-USDT@analysis", "state", "BTC-USDT"),
    ("@alerts", "event", ""),
    ("@monitoring", "state", ""),
    ("@my_alerts", "private", ""),
])
def test_channels(name: str, kind: str, inst: str) -> None:
    ch = parse_channel(name)
    assert (ch.name, ch.stream, ch.kind, ch.instrument) == (name, f"stream:{name}", kind, inst)


@pytest.mark.parametrize("name", ["", "BTC-USDT", "btc-usdt@depth", "BTC-USDT@depth7", "kraken:BTC-USDT@ticker",
                                  "okx:BTC-USDT@kline_", 'BTC-USDT@depth"', "@other", "BTC@depth",
                                  "okx:BTC-USDT@trades", "BTC-USDT@ticker"])
def test_bad_channels(name: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_channel(name)
    assert err.value.code == Code.BAD_CHANNEL


def test_stream_ids() -> None:
    assert parse_id("1700000000000-3") == (1700000000000, 3)
    assert parse_id("1700000000000") == (1700000000000, 0)
    assert parse_id("9-10") > parse_id("9-9")  # numeric, not text, order
    for bad in ("", "1-", "-1", "a-b", "1-2-3", "$", "+"):
        with pytest.raises(ProtocolError) as err:
            parse_id(bad)
        assert err.value.code == Code.BAD_SINCE


def test_event_frame_is_json_with_the_data_spliced_in() -> None:
    data = orjson.dumps({"price": "1.5", "nested": {"a": [1, "x"]}})
    frame = orjson.loads(event_frame("BTC-USDT@trades", "5-0", data))
    assert frame == {"event": "BTC-USDT@trades", "id": "5-0", "data": {"price": "1.5", "nested": {"a": [1, "x"]}}}
    assert orjson.loads(event_frame("@alerts", "5-1", b"{}", reset=True))["reset"] is True
