"""The module-level ``flow`` of each dataflow, built only when ``python -m bytewax.run`` asks for it."""

from __future__ import annotations

from collections.abc import Callable

from bytewax.dataflow import Dataflow


def lazy_flow(module: str, make: Callable[[], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__``: ``flow`` is ``make()`` on first access, so tests can import ``build`` freely
    without settings from the environment (``make`` reads them and exits 2 on a bad one)."""

    def __getattr__(name: str) -> Dataflow:
        if name == "flow":
            return make()
        msg = f"module {module!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return __getattr__
