"""Venue klines over REST, for backfill and self-repair: one small client per venue (``binance``, ``okx``,
``bybit``: request shape, typed parsing of the body through :func:`connectors.untrusted.decode`, how the venue
says "too many requests"), one generic pager with a shared request budget and backoff (``client``,
``budget``), and the backfill loop that writes ``kline`` points and keeps a resumable checkpoint
(``backfill``). Nothing here reads the environment: entry points pass a :class:`BackfillConfig`.
"""
