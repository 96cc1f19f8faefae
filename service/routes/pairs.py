"""``/v1/pairs``: the monitored set ``config:trading_pairs`` and the ids refused (``...:rejected``, id -> reason).

Reads are public (``API_PUBLIC_READS``); adding and removing need an admin key and do what
``cryptoflow pairs add|rm`` does: the set changes, and an added id's earlier rejection is cleared so the
dataflows try it again at their next poll.
"""

from __future__ import annotations

from typing import Annotated, cast

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from service.alerts.model import store
from service.auth import admin_user, public_reader
from service.errors import ApiError
from service.routes.live import instrument
from service.users import Principal

router = APIRouter(tags=["pairs"])


class Pairs(BaseModel):
    pairs: list[str]
    rejected: dict[str, str]


def _where(request: Request) -> tuple[aioredis.Redis, str]:
    return request.app.state.redis, request.app.state.settings.redis_trading_pairs_key


async def _read(client: aioredis.Redis, key: str) -> Pairs:
    async with store("redis"):
        pipe = client.pipeline(transaction=True)
        pipe.smembers(key)
        pipe.hgetall(f"{key}:rejected")
        members, rejected = await pipe.execute()
    return Pairs(pairs=sorted(cast(set[str], members)), rejected=cast(dict[str, str], rejected))


@router.get("/v1/pairs", response_model=Pairs)
async def list_pairs(request: Request, _user: Annotated[Principal | None, Depends(public_reader)]) -> Pairs:
    return await _read(*_where(request))


@router.post("/v1/pairs/{inst}", response_model=Pairs)
async def add_pair(request: Request, inst: str, _admin: Annotated[Principal, Depends(admin_user)]) -> Pairs:
    client, key = _where(request)
    inst = instrument(inst)
    async with store("redis"):
        pipe = client.pipeline(transaction=True)
        pipe.sadd(key, inst)
        pipe.hdel(f"{key}:rejected", inst)  # a corrected or re-added id gets a fresh chance
        await pipe.execute()
    return await _read(client, key)


@router.delete("/v1/pairs/{inst}", response_model=Pairs)
async def remove_pair(request: Request, inst: str, _admin: Annotated[Principal, Depends(admin_user)]) -> Pairs:
    client, key = _where(request)
    inst = instrument(inst)
    async with store("redis"):
        removed = await client.srem(key, inst)
    if not removed:
        raise ApiError(404, "not_found", f"{inst} is not in {key}")
    return await _read(client, key)
