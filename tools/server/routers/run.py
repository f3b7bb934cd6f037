"""POST /run_code and DELETE /sessions/{id}."""

from __future__ import annotations

import binascii
import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tools.schema import LANGUAGE_ALIASES, ErrorResponse, RunCodeRequest, RunCodeResponse
from tools.server import workfiles
from tools.server.auth import require_token
from tools.server.service import FilesRefused, Job, Overloaded, Sandbox, TooManySessions
from tools.server.settings import Settings, SettingsDep

router = APIRouter(dependencies=[Depends(require_token)], tags=["run"])

RETRY_AFTER_SECONDS = 1
"""Retry-After sent with 429: a snippet usually finishes well within a second."""
MIB = 1024 * 1024
JSON_MEDIA_TYPE = "application/json"


async def get_sandbox(request: Request) -> Sandbox:
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


class BadRequest(Exception):
    """A request the server refuses before running anything; carries the HTTP status and the reason."""

    def __init__(self, status_code: int, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.reason = reason


def build_job(req: RunCodeRequest, settings: Settings, languages: set[str]) -> Job:
    """Validate everything that can be checked without running; raises BadRequest with a clear message."""
    if len(req.code.encode()) > settings.max_code_bytes:
        raise BadRequest(413, f"code over {settings.max_code_bytes} bytes", "too_large")
    if req.stdin is not None and len(req.stdin.encode()) > settings.max_stdin_bytes:
        raise BadRequest(413, f"stdin over {settings.max_stdin_bytes} bytes", "too_large")
    language = LANGUAGE_ALIASES.get(req.language.lower())
    supported = sorted(name for name, runner in LANGUAGE_ALIASES.items() if runner in languages)
    if language is None or language not in languages:
        why = "unsupported" if language is None else "not available on this server"
        raise BadRequest(400, f"language {req.language!r} is {why}; supported: {', '.join(supported)}", "language")
    timeout = settings.default_run_timeout if req.run_timeout is None else float(req.run_timeout)
    if not math.isfinite(timeout) or timeout <= 0 or timeout > settings.max_run_timeout:
        raise BadRequest(
            422, f"run_timeout must be a number in (0, {settings.max_run_timeout}] seconds, got {req.run_timeout!r}",
            "invalid",
        )
    if req.compile_timeout is not None and not (math.isfinite(req.compile_timeout) and req.compile_timeout > 0):
        raise BadRequest(422, f"compile_timeout must be a positive number, got {req.compile_timeout!r}", "invalid")
    memory = None
    if req.memory_limit_MB is not None and req.memory_limit_MB > 0:
        if req.memory_limit_MB > settings.memory_mb:
            raise BadRequest(
                422, f"memory_limit_MB={req.memory_limit_MB} exceeds this server's limit of {settings.memory_mb} MiB "
                "per process (python -m tools.server --memory-mb)", "invalid",
            )
        memory = req.memory_limit_MB * MIB
    _check_files(req, settings)
    return Job(
        code=req.code, language=language, run_timeout=timeout, stdin=req.stdin, session_id=req.session_id,
        args=tuple(req.args), files=dict(req.files), fetch_files=tuple(req.fetch_files), memory_bytes=memory,
    )


def _check_files(req: RunCodeRequest, settings: Settings) -> None:
    if len(req.files) > settings.max_files or len(req.fetch_files) > settings.max_files:
        raise BadRequest(413, f"more than {settings.max_files} entries in files or fetch_files", "too_large")
    total = 0
    for path in [*req.files, *req.fetch_files]:
        try:
            workfiles.check_path(path)
        except workfiles.PathRefused as exc:
            raise BadRequest(400, f"files: {exc}", "files") from exc
    for path, content in req.files.items():
        if content is None:
            continue
        try:
            total += len(binascii.a2b_base64(content, strict_mode=True))
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(422, f"files[{path!r}] is not valid base64: {exc}", "invalid") from exc
    if total > settings.max_files_bytes:
        raise BadRequest(413, f"files hold {total} bytes, over the {settings.max_files_bytes} bytes limit", "too_large")


@router.post(
    "/run_code",
    response_model=RunCodeResponse,
    responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
               429: {"model": ErrorResponse}},
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": RunCodeRequest.model_json_schema()}},
                                   "required": True}},
)
async def run_code(request: Request, settings: SettingsDep, sandbox: SandboxDep) -> Response:
    body = await _read_body(request, settings.body_limit_bytes)
    try:
        req = RunCodeRequest.model_validate_json(body)
    except ValidationError as exc:
        sandbox.metrics.rejected.inc(reason="invalid")
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse(status_code=422, content={"detail": errors})
    try:
        job = build_job(req, settings, sandbox.languages)
        response = await sandbox.run(job)
    except BadRequest as exc:
        sandbox.metrics.rejected.inc(reason=exc.reason)
        raise HTTPException(exc.status_code, exc.detail) from exc
    except FilesRefused as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except Overloaded as exc:
        sandbox.metrics.rejected.inc(reason="overloaded")
        return _too_busy(f"sandbox overloaded: {exc}")
    except TooManySessions as exc:
        sandbox.metrics.rejected.inc(reason="sessions")
        return _too_busy(f"too many sessions: {exc}")
    # Serialised here, once: FastAPI's response_model path would validate and encode the model again.
    return Response(response.model_dump_json(), media_type=JSON_MEDIA_TYPE)


@router.delete("/sessions/{session_id}", status_code=204, responses={404: {"model": ErrorResponse}})
async def delete_session(session_id: str, sandbox: SandboxDep) -> Response:
    try:
        found = await sandbox.delete_session(session_id)
    except Overloaded as exc:
        return _too_busy(f"sandbox overloaded: {exc}")
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id!r}")
    return Response(status_code=204)
