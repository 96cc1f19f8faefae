"""API key -> user id for ``{"op":"auth"}``: the service's own key lookup (:mod:`service.auth`), adapted.

Kept to this one seam so the gateway does not depend on how users and keys are stored.
"""

from __future__ import annotations

from cryptoflow.settings import Settings
from service.push.connection import Authenticate


def authenticator(settings: Settings) -> Authenticate:
    async def authenticate(token: str) -> str | None:
        return None  # placeholder until service.auth lands: every key is refused

    return authenticate
