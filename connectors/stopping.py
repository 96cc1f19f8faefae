"""A clean stop on the first SIGINT/SIGTERM: the sources end, the sinks flush, the process exits 0.

What Bytewax 0.21.1 does with signals (``bytewax.run`` -> Rust ``cli_main``, measured): Python runs signal
handlers on the main thread only — between Bytewax's activations (the Rust loop calls ``check_signals``) and
inside any Python call made there (with one worker, the worker loop itself runs on the main thread). If a
handler raises — the default SIGINT handler raises ``KeyboardInterrupt``, and so did the old
``signal.signal(SIGTERM, default_int_handler)`` — the run is aborted: a Rust panic, a ``BytewaxRuntimeError``
traceback (``signal received``, or the interrupted ``next_batch``/``write_batch``), exit 1, nothing drained.
The default SIGTERM kills the process with no clean-up at all.

:func:`install` replaces both handlers with one that only sets a flag; every source of ours polls
:func:`stop_requested` in ``next_batch`` and ends (``StopIteration``), so Bytewax runs the end of input
through the dataflow (stateful steps keep their state, see ``operators/kline_steps.py``), writes the last
batches, closes every sink (which flushes) and returns normally; with recovery, the final snapshots are
committed like any other epoch's. A second signal raises ``KeyboardInterrupt``: Bytewax's own abort, for an
impatient user (exit 1; seen ignored when only the partitions' ``close()`` was left). One ``stopped`` line
is logged at exit (an ``atexit`` hook, once per process: Bytewax calls ``cli_main`` itself, so there is no
code of ours after the run), only when a signal asked for the stop and the run ended without an uncaught
exception (``sys.last_value``, set by the interpreter before the ``atexit`` hooks run).
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import time
from types import FrameType

from cryptoflow.logs import get_logger

_stop = threading.Event()
_installed = False
_signal: list[tuple[int, float]] = []  # (signum, monotonic time) of the first signal

log = get_logger("connectors.stopping")


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop() -> None:
    _stop.set()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _stop.is_set():
        raise KeyboardInterrupt
    _signal.append((signum, time.monotonic()))
    _stop.set()


def _log_stopped(dataflow: str) -> None:
    if not _signal or getattr(sys, "last_value", None) is not None:  # no signal, or the run failed
        return
    signum, at = _signal[0]
    log.info("stopped", dataflow=dataflow, signal=signal.Signals(signum).name,
             drain_ms=round((time.monotonic() - at) * 1000))


def install(dataflow: str) -> None:
    """SIGINT and SIGTERM set the stop flag (the second one aborts); ``stopped`` is logged at a clean exit.

    A signal the process inherited as ignored stays ignored. Main thread only (elsewhere a no-op, e.g. a
    flow built inside a test); idempotent.
    """
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a shell's background job stays ignored
            signal.signal(sig, _on_signal)
    atexit.register(_log_stopped, dataflow)
    _installed = True
