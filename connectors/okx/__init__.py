"""OKX v5: wire models and parsers (books, market), protocol hooks, REST."""
