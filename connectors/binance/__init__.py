"""Binance spot: market-data wire models, parsers and WebSocket hooks."""
