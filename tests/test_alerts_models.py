"""operators/alerts.py: input validation (one clear line per problem), header safety, email rendering."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.alerts import (
    AlertInputError,
    InvalidJob,
    check_job,
    create_alert,
    parse_change,
    parse_new_alert,
    price_text,
    render_email,
)
from operators.events import EmailJob

GOOD = {"price": 40000.0, "crypto": "BTC-USDT", "direction": False, "email": "a@b.example"}


def test_original_add_alert_body_is_accepted() -> None:
    spec = parse_new_alert(dict(GOOD))
    assert (spec.crypto, spec.price, spec.direction, spec.email) == ("BTC-USDT", Decimal(40000), False,
                                                                     "a@b.example")
    alert = create_alert(spec, 1_700_000_000_000)
    assert len(alert.id) == 32 and alert.created_at == "2023-11-14T22:13:20.000Z"
    assert alert.to_hash() == {"id": alert.id, "crypto": "BTC-USDT", "price": "40000", "direction": "false",
                               "email": "a@b.example", "created_at": "2023-11-14T22:13:20.000Z",
                               "status": "active"}


@pytest.mark.parametrize(("change", "needle"), [
    ({"price": -1}, "price: must be positive"),
    ({"price": 0}, "price: must be positive"),
    ({"price": float("nan")}, "price: must be finite"),
    ({"price": float("inf")}, "price: must be finite"),
    ({"price": "-inf"}, "price: must be finite"),
    ({"price": "NaN"}, "price: must be finite"),
    ({"price": "abc"}, "price: must be a number"),
    ({"price": True}, "price: must be a number, got bool"),
    ({"price": None}, "price: must be a number"),
    ({"price": "1e400"}, "price: must be below"),
    ({"price": "5\r\n"}, "price: must be a single line"),
    ({"crypto": "btc-usdt"}, "crypto: malformed instrument id"),
    ({"crypto": "BTCUSDT"}, "crypto: malformed instrument id"),
    ({"crypto": "BTC-USDT\r\nX-Evil: 1"}, "crypto: must be a single line"),
    ({"email": "not-an-address"}, "email: not a valid address"),
    ({"email": "a@b"}, "email: not a valid address"),
    ({"email": "a@b.example\r\nBcc: victim@c.example"}, "email: must be a single line"),
    ({"email": "a@b.example\nBcc: victim@c.example"}, "email: must be a single line"),
    ({"email": "a@b.example, victim@c.example"}, "email: not a valid address"),
    ({"email": "ü@b.example"}, "email: not a valid address"),
    ({"direction": "false"}, "direction: must be true (above) or false (below)"),
    ({"direction": 0}, "direction: must be true (above) or false (below)"),
    ({"extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_bad_inputs_are_rejected_with_one_clear_line(change, needle) -> None:
    with pytest.raises(AlertInputError) as err:
        parse_new_alert({**GOOD, **change})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_change_needs_something_and_is_validated() -> None:
    with pytest.raises(AlertInputError, match="nothing to update"):
        parse_change({"price": None})
    with pytest.raises(AlertInputError, match="price: must be positive"):
        parse_change({"price": "-3"})
    assert parse_change({"price": "36000.50", "direction": True}).price == Decimal("36000.5")


@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("999999999999"), places=8))
def test_any_positive_price_round_trips_exactly(price: Decimal) -> None:
    spec = parse_new_alert({**GOOD, "price": str(price)})
    assert spec.price == price and Decimal(price_text(spec.price)) == price
    assert "E" not in price_text(spec.price)


@given(st.text())
def test_arbitrary_text_never_becomes_a_header_injection(text: str) -> None:
    for field in ("email", "crypto"):
        try:
            spec = parse_new_alert({**GOOD, field: text})
        except AlertInputError:
            continue
        assert "\r" not in getattr(spec, field) and "\n" not in getattr(spec, field)


def test_rendered_email_is_readable_and_complete() -> None:
    subject, body = render_email("ab" * 16, "BTC-USDT", True, "36000", "36012.5", "2026-11-21T09:00:00.000Z")
    assert subject == "Price alert: BTC-USDT rose to 36012.5"  # the trigger price; the body has both
    for part in ("BTC-USDT", "rose to or above 36000", "Trigger price: 36012.5", "2026-11-21T09:00:00.000Z",
                 "ab" * 16):
        assert part in body
    _, down = render_email("cd" * 16, "ETH-USDT", False, "2000", "1999", "t")
    assert "fell to or below 2000" in down


def _job(**kw: object) -> EmailJob:
    base = {"id": "j1", "alert_id": "a1", "to": "a@b.example", "subject": "s", "body": "b\r\nline 2",
            "created_at": "t"}
    return EmailJob(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    {"to": "a@b.example\r\nBcc: x@y.example"}, {"to": "nobody"}, {"subject": "hi\r\nBcc: x@y.example"},
    {"subject": "hi\nthere"}, {"subject": ""}, {"subject": "x" * 201}, {"subject": "bell\x07"},
    {"id": "j\n1"},
])
def test_jobs_that_could_inject_headers_are_invalid(bad) -> None:
    with pytest.raises(InvalidJob):
        check_job(_job(**bad))


def test_a_good_job_passes_with_multiline_body() -> None:
    assert check_job(_job()).body == "b\r\nline 2"


def test_a_trailing_newline_never_passes_an_id_check() -> None:
    # `re.match` with `$` accepts "X\n": ids reach Redis keys, subscriptions and email text.
    from operators.alerts import check_alert_id
    from operators.instruments import InvalidInstrument, is_spot, validate_instrument

    with pytest.raises(InvalidInstrument):
        validate_instrument("BTC-USDT\n")
    assert not is_spot("BTC-USDT\n") and is_spot("BTC-USDT")
    with pytest.raises(AlertInputError):
        check_alert_id("0" * 32 + "\n")
    assert check_alert_id("0" * 32) == "0" * 32
