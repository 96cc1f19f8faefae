"""Redis: the client (Sentinel-aware), keys, the list source and acks, the sinks and their write path, push streams,
``system:monitoring``, the pairs poller, book snapshots from the hashes."""
