"""Bybit v5 spot: market-data wire models, parsers and WebSocket hooks."""
