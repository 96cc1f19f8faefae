"""The push gateway: ``GET /ws`` (docs/CONTRACTS.md "Push").

``protocol`` (client messages, bounded parsing, error codes), ``channels`` (channel names -> streams and
delivery kinds), ``tailer`` (one XREAD loop per process fanning stream entries out), ``catchup`` (snapshots and
``since`` replays read from Redis), ``connection`` (one client: subscriptions, conflation, bounded queue, the
send loop), ``gateway`` (the ``router`` with the ``/ws`` route, per-address limits, auth).
"""
