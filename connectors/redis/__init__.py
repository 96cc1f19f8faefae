"""Redis: the client (Sentinel-aware), keys, the list source and acks, the sinks' write path, push streams."""
