"""Alert storage and the ``cryptoflow alerts`` command against a real redis-server: keys per docs/CONTRACTS.md,
atomic moves between gt/lt, and bad inputs rejected with one line, exit 2 and Redis untouched."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from connectors.alerts.matcher import AlertMatcher
from connectors.alerts.store import AlertAlreadyFired, AlertNotFound, AlertStore
from cryptoflow.cli import main
from operators.alerts import create_alert, parse_change, parse_new_alert


@pytest.fixture
def cli(redis_server, redis_db, monkeypatch, capsys, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cryptoflow.db")  # alerts live in SQL
    # structlog would keep printing to capsys' stderr after it is closed: leave logging as it is.
    monkeypatch.setattr("cryptoflow.cli.configure_logging", lambda *a, **k: None)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["alerts", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _state(client: redis.Redis) -> dict[str, bytes]:
    raw = redis.Redis(port=client.connection_pool.connection_kwargs["port"])
    return {k.decode(): raw.dump(k) for k in raw.keys("*")}


def test_add_list_show_update_rm(cli, redis_db) -> None:
    code, out, _ = cli("add", "--crypto", "BTC-USDT", "--above", "36000", "--email", "a@b.example")
    assert code == 0
    up = out.strip()
    assert redis_db.hgetall(f"alert:{up}") == {
        "id": up, "crypto": "BTC-USDT", "price": "36000", "direction": "true", "email": "a@b.example",
        "created_at": redis_db.hget(f"alert:{up}", "created_at"), "status": "active"}
    assert redis_db.zrange("alert:BTC-USDT:gt", 0, -1, withscores=True) == [(up, 36000.0)]

    code, out, _ = cli("add", "--json", '{"price": 40000.0, "crypto": "BTC-USDT", "direction": false}',
                       "--email", "c@d.example")
    down = out.strip()
    assert code == 0 and redis_db.zrange("alert:BTC-USDT:lt", 0, -1, withscores=True) == [(down, 40000.0)]
    cli("add", "--crypto", "ETH-USDT", "--below", "1999.5", "--email", "e@f.example")

    code, out, _ = cli("list", "--crypto", "BTC-USDT")
    assert code == 0 and {line.split()[0] for line in out.splitlines()} == {up, down}
    assert "ETH-USDT" in cli("list")[1]
    code, out, _ = cli("show", up)
    assert code == 0 and '"price": "36000"' in out and '"direction": "true"' in out

    # Direction change moves the id from gt to lt (one script), threshold and email change in place.
    code, out, _ = cli("update", up, "--below", "35000.25", "--email", "z@y.example")
    assert code == 0 and "below 35000.25" in out
    assert redis_db.zscore("alert:BTC-USDT:gt", up) is None
    assert redis_db.zscore("alert:BTC-USDT:lt", up) == 35000.25
    assert redis_db.hget(f"alert:{up}", "email") == "z@y.example"
    code, _, _ = cli("update", up, "--crypto", "ETH-USDT", "--price", "2100")
    assert code == 0 and redis_db.zscore("alert:ETH-USDT:lt", up) == 2100.0
    assert redis_db.zscore("alert:BTC-USDT:lt", up) is None

    code, out, _ = cli("rm", up)
    assert code == 0 and not redis_db.exists(f"alert:{up}") and redis_db.zscore("alert:ETH-USDT:lt", up) is None
    code, _, err = cli("rm", up)
    assert code == 1 and err.strip() == f"cryptoflow alerts: no alert with id {up}"


BAD = [
    (["add", "--crypto", "BTC-USDT", "--above", "-1", "--email", "a@b.example"], "price: must be positive"),
    (["add", "--crypto", "BTC-USDT", "--above", "0", "--email", "a@b.example"], "price: must be positive"),
    (["add", "--crypto", "BTC-USDT", "--below", "NaN", "--email", "a@b.example"], "price: must be finite"),
    (["add", "--crypto", "BTC-USDT", "--below", "inf", "--email", "a@b.example"], "price: must be finite"),
    (["add", "--crypto", "BTC-USDT", "--below", "12abc", "--email", "a@b.example"], "price: must be a number"),
    (["add", "--crypto", "btc_usdt", "--above", "1", "--email", "a@b.example"], "malformed instrument id"),
    (["add", "--crypto", "BTC-USDT", "--above", "1", "--email", "nobody"], "email: not a valid address"),
    (["add", "--crypto", "BTC-USDT", "--above", "1", "--email", "a@b.example\r\nBcc: v@c.example"],
     "email: must be a single line"),
    (["add", "--crypto", "BTC-USDT\r\nSubject: x", "--above", "1", "--email", "a@b.example"],
     "crypto: must be a single line"),
    (["add", "--json", '{"price": "NaN", "crypto": "BTC-USDT", "direction": true}', "--email", "a@b.example"],
     "price: must be finite"),
    (["add", "--json", '{"price": 1, "crypto": "BTC-USDT", "direction": "up"}', "--email", "a@b.example"],
     "direction: must be true"),
    (["add", "--json", '{"price": 1, "crypto": "BTC-USDT"}', "--email", "a@b.example"], "missing direction"),
    (["add", "--json", "[1]", "--email", "a@b.example"], "--json must be an object"),
    (["add", "--json", "{", "--email", "a@b.example"], "--json is not valid JSON"),
    (["add", "--json", '{"price": 1, "crypto": "BTC-USDT", "direction": true}'], "an email is required"),
    (["add", "--crypto", "BTC-USDT", "--email", "a@b.example"], "add needs --crypto"),
    (["show", "../../etc"], "malformed alert id"),
    (["rm", "ABC"], "malformed alert id"),
    (["update", "0" * 32], "nothing to update"),
    (["update", "0" * 32, "--price", "-5"], "price: must be positive"),
    (["update", "0" * 32, "--email", "x@y.example\nBcc: z@w.example"], "email: must be a single line"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(cli, redis_db, argv, needle) -> None:
    cli("add", "--crypto", "BTC-USDT", "--above", "36000", "--email", "a@b.example")
    before = _state(redis_db)
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("cryptoflow alerts: ") and needle in err
    assert _state(redis_db) == before


def test_update_of_unknown_or_fired_alert_fails_cleanly(redis_db) -> None:
    store = AlertStore(redis_db)
    with pytest.raises(AlertNotFound):
        store.update("0" * 32, parse_change({"price": "5"}))
    alert = create_alert(parse_new_alert({"crypto": "BTC-USDT", "price": 100, "direction": True,
                                          "email": "a@b.example"}), 0)
    store.add(alert)
    assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(101), 1000)]) == [alert.id]
    before = _state(redis_db)
    with pytest.raises(AlertAlreadyFired):
        store.update(alert.id, parse_change({"direction": False}))
    assert _state(redis_db) == before  # a fired alert is not re-armed into a set
    assert store.get(alert.id).status == "fired"
