"""structlog set-up: JSON lines in production, readable key=value lines on a terminal.

One event name per line (``book_resynced``), context as keys (``venue=okx instrument=BTC-USDT``).
Nothing is configured at import: entry points call :func:`configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from cryptoflow.settings import LogFormat


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "INFO", fmt: LogFormat | str | None = None) -> None:
    """Route structlog (and stdlib logging) to stderr; ``fmt=None`` picks console on a TTY, else JSON."""
    if fmt is None:
        fmt = LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
    renderer: Any
    if LogFormat(fmt) is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through stdlib (websockets, aiosmtpd) stay quiet below WARNING.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str, **context: Any) -> Any:
    # Lazy: binding here would freeze the configuration of import time (before configure_logging runs),
    # so LOG_LEVEL / LOG_FORMAT would be ignored by module-level loggers.
    return structlog.get_logger(name, **context)
