"""GET /health (open, for load balancers and healthchecks) and GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from tools.server.auth import require_token
from tools.server.metrics import CONTENT_TYPE
from tools.server.routers.run import SandboxDep

router = APIRouter(tags=["status"])


@router.get("/health")
async def health(sandbox: SandboxDep) -> dict[str, Any]:
    """Liveness plus which isolation layers are active; no token needed (it reveals no secrets)."""
    return sandbox.health()


@router.get("/metrics", dependencies=[Depends(require_token)])
async def metrics(sandbox: SandboxDep) -> Response:
    return Response(sandbox.metrics.render(), media_type=CONTENT_TYPE)
