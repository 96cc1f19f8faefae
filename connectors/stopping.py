"""A clean stop on the first SIGINT/SIGTERM: the sources end, the sinks flush, the process exits 0.

Bytewax 0.21.1 checks Python's signal handlers between activations and aborts the run (a Rust panic, a
``BytewaxRuntimeError``, exit 1) when one raises, as the default SIGINT handler does. :func:`install` replaces
both handlers with one that only sets a flag; every source of ours polls :func:`stop_requested` in
``next_batch`` and ends (``StopIteration``), so Bytewax drains the dataflow, flushes and closes the sinks and
returns normally. A second signal raises ``KeyboardInterrupt``: Bytewax's own abort, for an impatient user.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_stop = threading.Event()
_installed = False


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop() -> None:
    _stop.set()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _stop.is_set():
        raise KeyboardInterrupt
    _stop.set()


def install() -> None:
    """SIGINT and SIGTERM set the stop flag (the second one aborts). Main thread only; idempotent."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _installed = True
