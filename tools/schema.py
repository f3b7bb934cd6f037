"""Request and response models of the SandboxFusion-compatible ``/run_code`` API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

SUPPORTED_LANGUAGES: frozenset[str] = frozenset({"python", "python3"})
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

RunStatus = Literal["Finished", "Error", "TimeLimitExceeded", "MemoryLimitExceeded"]
"""Finished: exit code 0. Error: non-zero exit or killed by a signal. TimeLimitExceeded: wall clock or CPU
limit. MemoryLimitExceeded: the address-space limit made the code fail with MemoryError."""
ResponseStatus = Literal["Success", "Failed", "SandboxError"]
"""Success: the code ran and finished. Failed: the code ran and did not finish cleanly (a model's bug).
SandboxError: the sandbox itself failed (crashed worker, lost session) - retry, don't blame the code."""


class RunCodeRequest(BaseModel):
    """Body of ``POST /run_code``. Unknown SandboxFusion fields (compile_timeout, files...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    code: str
    language: str = "python"
    run_timeout: Annotated[StrictFloat | StrictInt | None, Field(description="seconds of wall clock")] = None
    stdin: str | None = None
    session_id: Annotated[str | None, Field(pattern=SESSION_ID_PATTERN)] = None


class RunResult(BaseModel):
    status: RunStatus
    execution_time: float | None = None
    """Seconds of wall clock from handing the code to the child to its answer."""
    return_code: int | None = None
    """Exit code; negative signal number when a signal killed it (like subprocess)."""
    stdout: str = ""
    stderr: str = ""


class RunCodeResponse(BaseModel):
    status: ResponseStatus
    message: str = ""
    compile_result: None = None
    """Always null for Python; kept for SandboxFusion clients that read it."""
    run_result: RunResult | None = None
    truncated: bool = False
    """stdout or stderr was longer than the server's output limit and was cut."""
    session_id: str | None = None


class ErrorResponse(BaseModel):
    detail: str
