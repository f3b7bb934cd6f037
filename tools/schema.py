"""Request and response models of the SandboxFusion-compatible ``/run_code`` API.

Field names, shapes and statuses follow SandboxFusion's ``/run_code`` (``RunCodeRequest``,
``RunCodeResponse``, ``CommandRunResult``), so its clients work unchanged; see docs/sandbox.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

LANGUAGE_ALIASES: dict[str, str] = {"python": "python", "python3": "python", "pytest": "pytest", "bash": "bash"}
"""Accepted ``language`` values and the runner each maps to."""
SUPPORTED_LANGUAGES: frozenset[str] = frozenset(LANGUAGE_ALIASES)
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

RunStatus = Literal["Finished", "Error", "TimeLimitExceeded", "MemoryLimitExceeded"]
"""Finished: the program ran to its end, whatever its exit code (``return_code``; negative = killed by
that signal). TimeLimitExceeded: stopped at ``run_timeout`` (or its CPU-time backstop); no return code.
MemoryLimitExceeded (ours, not SandboxFusion's): Python code failed with MemoryError under the memory
limit. Error: the sandbox itself failed to run the program (the top-level status is then SandboxError)."""
ResponseStatus = Literal["Success", "Failed", "SandboxError"]
"""Success: Finished with exit code 0. Failed: the program ran and did not succeed (non-zero exit, time or
memory limit) - the code's fault. SandboxError: the sandbox failed (crashed worker, child that could not
start, lost session) - retry it, don't blame the code."""
Number = StrictFloat | StrictInt


class RunCodeRequest(BaseModel):
    """Body of ``POST /run_code`` (SandboxFusion's fields; unknown extra fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    code: str
    language: str = "python"
    """python (or python3), pytest, bash; any other value is answered 400 naming the supported ones."""
    run_timeout: Annotated[Number | None, Field(description="seconds of wall clock")] = None
    compile_timeout: Annotated[Number | None, Field(description="seconds; none of the languages compiles")] = None
    memory_limit_MB: Annotated[StrictInt | None, Field(description="address space per process, MiB; <= 0: default")] = None
    stdin: str | None = None
    files: dict[str, str | None] = Field(default_factory=dict)
    """Path (relative to the working directory) -> base64 contents, written before the run; None skips."""
    fetch_files: list[str] = Field(default_factory=list)
    """Paths read back after the run, returned base64 in the response's ``files``; missing ones are left out."""
    args: list[str] = Field(default_factory=list)
    """Command-line arguments: pytest's (e.g. ["-k", "name"]), ``sys.argv[1:]`` for python, ``$1..`` for bash."""
    session_id: Annotated[str | None, Field(pattern=SESSION_ID_PATTERN)] = None
    """Ours: run in a stateful session (variables and files persist between calls with the same id)."""


class RunResult(BaseModel):
    status: RunStatus
    execution_time: float | None = None
    """Seconds of wall clock from handing the code to the child to its answer."""
    return_code: int | None = None
    """Exit code; negative signal number when a signal killed it (like subprocess); None on a time limit."""
    stdout: str = ""
    stderr: str = ""


class RunCodeResponse(BaseModel):
    status: ResponseStatus
    message: str = ""
    """Why it failed (the sandbox's fault for SandboxError); notes such as skipped fetch_files otherwise."""
    compile_result: None = None
    """Always null: none of the supported languages has a compile step (kept for SandboxFusion clients)."""
    run_result: RunResult | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """``fetch_files`` that existed after the run: path -> base64 contents."""
    truncated: bool = False
    """stdout or stderr was longer than the server's output limit and was cut."""
    session_id: str | None = None


class ErrorResponse(BaseModel):
    detail: str
