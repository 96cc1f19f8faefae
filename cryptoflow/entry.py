"""The module-level ``flow`` of each dataflow, built only when ``python -m bytewax.run`` asks for it.

Building it is also when the process becomes a dataflow: SIGINT/SIGTERM then stop it cleanly
(:mod:`connectors.stopping`). Nothing is installed at import, so tests and tools can import the modules.
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.dataflow import Dataflow

from connectors import stopping


def lazy_flow(module: str, make: Callable[[], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__``: ``flow`` is ``make()`` on first access, so tests can import ``build`` freely
    without settings from the environment (``make`` reads them and exits 2 on a bad one). From then on the
    first SIGINT/SIGTERM stops the dataflow cleanly (:func:`connectors.stopping.install`)."""

    def __getattr__(name: str) -> Dataflow:
        if name == "flow":
            stopping.install(module.rsplit(".", 1)[-1])  # first: a signal while the flow is built stops it too
            return make()
        msg = f"module {module!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return __getattr__
