"""Market data (tickers, trades, klines) of every venue: parser results, the sources, the kline steps and outputs."""
