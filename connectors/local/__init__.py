"""The exchange's own matching engine as a market-data venue (``local``): trades from Redis Streams."""
