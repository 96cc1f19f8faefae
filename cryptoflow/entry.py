"""The module-level ``flow`` of each dataflow, built only when ``python -m bytewax.run`` asks for it.

Building it is also when the process becomes a dataflow: SIGINT/SIGTERM then stop it cleanly
(:mod:`connectors.stopping`), and with ``METRICS_PORT`` set the process serves Prometheus ``/metrics`` there
(:mod:`connectors.metrics`; once per process, whatever its number of workers), and the garbage collector is set
for a long run (:mod:`cryptoflow.heap`: the start-up heap frozen, young collections spaced out). Nothing is
installed at import, so tests and tools can import the modules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bytewax.dataflow import Dataflow

from connectors import stopping
from cryptoflow import heap
from cryptoflow.logs import get_logger

log = get_logger("cryptoflow.entry")


def lazy_flow(module: str, make: Callable[[], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__``: ``flow`` is ``make()`` on first access, so tests can import ``build`` freely
    without settings from the environment (``make`` reads them and exits 2 on a bad one). From then on the
    first SIGINT/SIGTERM stops the dataflow cleanly (:func:`connectors.stopping.install`), ``/metrics`` is
    served on ``METRICS_PORT`` when set (:func:`serve_metrics`), and the heap is settled
    (:func:`cryptoflow.heap.settle`)."""

    def __getattr__(name: str) -> Dataflow:
        if name == "flow":
            dataflow = module.rsplit(".", 1)[-1]
            stopping.install(dataflow)  # first: a signal while the flow is built stops it too
            flow = make()
            serve_metrics(dataflow)
            heap.settle()  # last: every start-up object exists (cryptoflow.heap)
            return flow
        msg = f"module {module!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return __getattr__


def serve_metrics(dataflow: str) -> None:
    """``/metrics`` on ``METRICS_PORT`` (all interfaces) unless it is 0; a port that cannot be bound stops the
    process with one line and exit status 2 (metrics asked for and silently missing help no one)."""
    from connectors import metrics
    from cryptoflow.settings import settings_or_exit

    port = settings_or_exit().metrics_port
    if not port:
        return
    try:
        if metrics.serve(port):
            log.info("metrics_listening", dataflow=dataflow, port=port, path="/metrics")
    except OSError as err:
        print(f"cryptoflow: {dataflow}: cannot serve metrics on METRICS_PORT={port}: {err.strerror or err}",
              file=sys.stderr)
        raise SystemExit(2) from None
