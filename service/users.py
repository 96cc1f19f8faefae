"""Users and their API keys: create (the key is shown once), list, remove, and resolve a presented key.

A key is ``cf_`` + 32 random bytes (``secrets.token_urlsafe``). Only its SHA-256 is stored: with 256 bits of
randomness a fast unsalted hash is enough (nothing to brute-force, unlike a password), and it lets a request
find its key by an indexed equality lookup. A removed user's keys go with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.db import ApiKey, Database, User

KEY_PREFIX = "cf_"
KEY_BYTES = 32
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class UserError(ValueError):
    """A user command that cannot be done; ``str()`` is one line."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's id, name and whether it is an admin."""

    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class UserInfo:
    name: str
    is_admin: bool
    created_at: datetime
    keys: int


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def check_name(name: str) -> str:
    if not USER_NAME_RE.fullmatch(name):
        msg = (f"malformed user name {name[:80]!r}: 1-64 characters, letters, digits and _ . @ -, "
               "starting with a letter or digit")
        raise UserError(msg)
    return name


async def add_user(db: Database, name: str, *, admin: bool = False) -> str:
    """Create the user with one API key; returns the key (the only time it is visible)."""
    check_name(name)
    key = new_key()
    now = datetime.now(UTC)
    async with db.session() as s:
        user = User(name=name, is_admin=admin, created_at=now)
        s.add(user)
        try:
            await s.flush()
        except IntegrityError:
            msg = f"user {name!r} already exists"
            raise UserError(msg) from None
        s.add(ApiKey(user_id=user.id, key_hash=hash_key(key), created_at=now))
        await s.commit()
    return key


async def list_users(db: Database) -> list[UserInfo]:
    keys = select(ApiKey.user_id, func.count().label("n")).group_by(ApiKey.user_id).subquery()
    query = (select(User, func.coalesce(keys.c.n, 0)).outerjoin(keys, keys.c.user_id == User.id)
             .order_by(User.name))
    async with db.session() as s:
        rows = (await s.execute(query)).all()
    return [UserInfo(u.name, u.is_admin, u.created_at, int(n)) for u, n in rows]


async def find_user(db: Database, name: str) -> Principal:
    async with db.session() as s:
        user = (await s.execute(select(User).where(User.name == name))).scalar_one_or_none()
    if user is None:
        msg = f"no user named {name[:80]!r}"
        raise UserError(msg)
    return Principal(user.id, user.name, user.is_admin)


async def remove_user(db: Database, name: str) -> Principal:
    """Delete the user and its keys (its alerts are the caller's business: see ``cryptoflow users rm``)."""
    who = await find_user(db, name)
    async with db.session() as s:
        user = await s.get(User, who.id)
        if user is not None:
            await s.delete(user)
            await s.commit()
    return who


async def principal_for_key(db: Database, key: str) -> Principal | None:
    """The user a presented key belongs to, or None (unknown key)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    query = select(User).join(ApiKey, ApiKey.user_id == User.id).where(ApiKey.key_hash == hash_key(key))
    async with db.session() as s:
        user = (await s.execute(query)).scalar_one_or_none()
    return None if user is None else Principal(user.id, user.name, user.is_admin)
