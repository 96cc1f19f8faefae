"""The fixed Redis keys of the product contract (docs/CONTRACTS.md "Redis"), spelled once.

Keys that users rename (``REDIS_TRADING_PAIRS_KEY``, ``ORDERBOOK_BUFFER_KEY``) come from the settings instead.
"""

MONITORING = "system:monitoring"
EMAIL_QUEUE = "queue:email"
ALERTS_HISTORY = "alerts:history"


def orderbook_key(instrument: str) -> str:
    return f"orderbook:{instrument}"


def analysis_key(instrument: str) -> str:
    return f"analysis:{instrument}"


def venue_book_key(venue: str, instrument: str) -> str:
    """A venue's book: OKX keeps ``orderbook:{inst}``; the others are ``orderbook:{exchange}:{inst}``."""
    return orderbook_key(instrument) if venue == "okx" else f"orderbook:{venue}:{instrument}"


def bbo_key(instrument: str) -> str:
    return f"bbo:{instrument}"
