"""A local exchange: OKX, Binance and Bybit public market data on one loopback port (``python -m simulator``)."""
