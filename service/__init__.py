"""``cryptoflow serve``: the REST API, the push gateway and the browser monitor, one ASGI process.

Layout: ``app`` (the FastAPI factory and its lifespan), ``routes/`` (one module per resource, each exposing
``router``), ``db/`` (SQLAlchemy models, the async engine), ``migrations/`` (Alembic), ``alerts`` (the alert
service: SQL first, then the Redis matching index, and the reconciler), ``users`` and ``auth`` (API keys),
``push/`` (the WebSocket gateway). Dependencies point one way: service -> connectors -> operators.
"""
