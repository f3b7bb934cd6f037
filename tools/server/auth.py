"""Optional bearer-token check, as a dependency routers declare."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status

from tools.server.settings import SettingsDep


async def require_token(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when a token is configured)."""
    if settings.token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
