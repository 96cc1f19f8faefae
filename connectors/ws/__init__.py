"""Generic WebSocket machinery shared by every venue (see README of each module).

* :mod:`connectors.ws.hooks` — the :class:`VenueHooks` contract a venue implements.
* :mod:`connectors.ws.session` — :class:`WsConnection`: one self-healing connection.
* :mod:`connectors.ws.shard` — :class:`ShardRunner`: a shard's connections in an asyncio thread.
* :mod:`connectors.ws.source` — :class:`WsShardSource`: the Bytewax source over shards.
"""
