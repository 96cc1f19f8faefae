"""tests/waiting.py's ``wait_for``: what counts as "not yet", and what it says when time is up."""

from __future__ import annotations

import pytest

from tests.waiting import wait_for


class Slow(Exception):
    pass


def test_an_exception_named_not_yet_is_polled_past() -> None:
    answers = iter([Slow("starved"), None, Slow("again"), "there"])

    def check() -> str | None:
        a = next(answers)
        if isinstance(a, Slow):
            raise a
        return a

    assert wait_for("it", check, timeout=60, every=0, not_yet=(Slow,)) == "there"


def test_any_other_exception_ends_the_wait() -> None:
    def check() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        wait_for("it", check, timeout=60, every=0, not_yet=(Slow,))


def test_time_up_names_the_wait_and_the_last_answer() -> None:
    def check() -> None:
        raise Slow("still starved")

    with pytest.raises(AssertionError, match=r"waiting for the chart .*Slow\('still starved'\)"):
        wait_for("the chart", check, timeout=0.05, every=0.01, not_yet=(Slow,))
