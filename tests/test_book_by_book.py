"""A shard's batch is worked book by book (:func:`connectors.ws.events.book_by_book`): each instrument's frames
keep their order, other events keep their place, and the books come out the same as frame by frame."""

from __future__ import annotations

import json

from connectors.okx.books import frame_instrument
from connectors.ws.events import Frame, Subscribed, book_by_book


def okx(inst: str, n: int) -> str:
    return json.dumps({"arg": {"channel": "books", "instId": inst}, "action": "update", "data": [{"n": n}]},
                      separators=(",", ":"))


def test_frames_regrouped_per_instrument_between_other_events() -> None:
    a1, b1, a2, b2, a3, c1 = (Frame(okx(i, n), n, 0) for i, n in
                              (("A-B", 1), ("C-D", 1), ("A-B", 2), ("C-D", 2), ("A-B", 3), ("E-F", 1)))
    pong = Frame("pong", 9, 0)
    sub = Subscribed(0, "E-F")
    events = [a1, b1, pong, a2, sub, b2, a3, c1]
    assert book_by_book(events, frame_instrument) == [a1, a2, b1, pong, sub, b2, a3, c1]
    assert book_by_book([], frame_instrument) == []


def test_frame_instrument_is_the_arg_inst_id_or_empty() -> None:
    assert frame_instrument(okx("BTC-USDT", 1)) == "BTC-USDT"
    assert frame_instrument("pong") == ""
    assert frame_instrument('{"event":"error","code":"60018","msg":"x"}') == ""
