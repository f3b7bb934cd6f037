"""POST /run_code and DELETE /sessions/{id}."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tools.schema import SUPPORTED_LANGUAGES, ErrorResponse, RunCodeRequest, RunCodeResponse
from tools.server.auth import require_token
from tools.server.service import Overloaded, Sandbox, TooManySessions
from tools.server.settings import SettingsDep

router = APIRouter(dependencies=[Depends(require_token)], tags=["run"])

RETRY_AFTER_SECONDS = 1
"""Retry-After sent with 429: a snippet usually finishes well within a second."""
BODY_OVERHEAD_BYTES = 64 * 1024
"""Room for JSON syntax and escaping on top of the code and stdin limits."""


def get_sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]


def _too_busy(detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        content={"detail": detail},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes of body; 413 beyond (without buffering the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")
    return bytes(body)


@router.post(
    "/run_code",
    response_model=RunCodeResponse,
    responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
               429: {"model": ErrorResponse}},
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": RunCodeRequest.model_json_schema()}},
                                   "required": True}},
)
async def run_code(request: Request, settings: SettingsDep, sandbox: SandboxDep) -> RunCodeResponse | JSONResponse:
    body = await _read_body(request, settings.max_code_bytes + settings.max_stdin_bytes + BODY_OVERHEAD_BYTES)
    try:
        req = RunCodeRequest.model_validate_json(body)
    except ValidationError as exc:
        sandbox.metrics.rejected.inc(reason="invalid")
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse(status_code=422, content={"detail": errors})
    if len(req.code.encode()) > settings.max_code_bytes:
        sandbox.metrics.rejected.inc(reason="too_large")
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"code over {settings.max_code_bytes} bytes")
    if req.stdin is not None and len(req.stdin.encode()) > settings.max_stdin_bytes:
        sandbox.metrics.rejected.inc(reason="too_large")
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"stdin over {settings.max_stdin_bytes} bytes")
    if req.language.lower() not in SUPPORTED_LANGUAGES:
        sandbox.metrics.rejected.inc(reason="language")
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"unsupported language {req.language!r}; supported: {sorted(SUPPORTED_LANGUAGES)}"
        )
    timeout = settings.default_run_timeout if req.run_timeout is None else float(req.run_timeout)
    if not math.isfinite(timeout) or timeout <= 0 or timeout > settings.max_run_timeout:
        sandbox.metrics.rejected.inc(reason="invalid")
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"run_timeout must be a number in (0, {settings.max_run_timeout}] seconds, got {req.run_timeout!r}",
        )
    try:
        return await sandbox.run(req.code, timeout, req.stdin, req.session_id)
    except Overloaded as exc:
        sandbox.metrics.rejected.inc(reason="overloaded")
        return _too_busy(f"sandbox overloaded: {exc}")
    except TooManySessions as exc:
        sandbox.metrics.rejected.inc(reason="sessions")
        return _too_busy(f"too many sessions: {exc}")


@router.delete("/sessions/{session_id}", status_code=204, responses={404: {"model": ErrorResponse}})
async def delete_session(session_id: str, sandbox: SandboxDep) -> Response:
    try:
        found = await sandbox.delete_session(session_id)
    except Overloaded as exc:
        return _too_busy(f"sandbox overloaded: {exc}")
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r}")
    return Response(status_code=204)
