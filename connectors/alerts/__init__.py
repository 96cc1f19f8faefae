"""Price alerts in Redis: storage (``store``) and the atomic Lua matcher with its Bytewax sink (``matcher``).

Keys (docs/CONTRACTS.md): ``alert:{id}`` hash; ``alert:{inst}:gt`` / ``alert:{inst}:lt`` sorted sets (member = id,
score = threshold); fired alerts queue their email job on ``queue:email``.
"""
