"""Server settings: one model, defaults as named constants, handed to routes through Depends."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.server.zygote import SESSION_SLOT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = max(1, min(os.cpu_count() or 1, 8))
DEFAULT_MAX_QUEUE_PER_WORKER = 16
DEFAULT_QUEUE_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 10.0
DEFAULT_MAX_RUN_TIMEOUT = 120.0
DEFAULT_GRACE = 10.0
DEFAULT_MAX_CODE_BYTES = 1024 * 1024
DEFAULT_MAX_STDIN_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_FILES = 256
"""Entries in a request's ``files`` or ``fetch_files``."""
DEFAULT_MAX_FILES_BYTES = 16 * 1024 * 1024
"""Decoded bytes of all ``files`` of one request."""
DEFAULT_FETCH_LIMIT_BYTES = 16 * 1024 * 1024
"""Bytes of all ``fetch_files`` returned by one request (files beyond it are left out with a note)."""
DEFAULT_OUTPUT_LIMIT_BYTES = 64 * 1024
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_PROCESSES = 64
DEFAULT_FILE_SIZE_MB = 64
DEFAULT_OPEN_FILES = 256
DEFAULT_TMPFS_MB = 256
DEFAULT_MAX_SESSIONS = 64
DEFAULT_SESSION_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_JOURNAL_BYTES = 4 * 1024 * 1024
DEFAULT_WORKER_START_TIMEOUT = 120.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_UID_BASE = 1_000_000_000
"""Far above the ranges login.defs and /etc/subuid hand out, so no real user shares these uids."""
UID_BLOCK = 1024
"""Uids per server when the base is chosen automatically (servers get distinct blocks by pid)."""
DEFAULT_PRELOAD: tuple[str, ...] = ("math", "json", "re", "collections", "itertools", "fractions", "numpy", "sympy")
"""Add ``pytest`` for pytest-heavy workloads: ~70 ms instead of ~0.5 s per pytest run, but every fork of the
full image then costs about a quarter more (measured in docs/sandbox.md)."""
DISABLEABLE_LAYERS: tuple[str, ...] = ("namespaces", "uids", "seccomp", "landlock")
BODY_OVERHEAD_BYTES = 64 * 1024
"""Room for JSON syntax, escaping and the small fields on top of the code, stdin and files limits."""
TOKEN_ENV = "AGENTRL_SANDBOX_TOKEN"
"""Environment variable read for the bearer token (keeps it out of the process list)."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = DEFAULT_HOST
    """Interface to bind; loopback unless you mean to expose the sandbox."""
    port: int = DEFAULT_PORT
    workers: int = Field(DEFAULT_WORKERS, ge=1, le=256)
    """Zygotes, i.e. snippets that can run at the same time."""
    token: str | None = Field(None, repr=False)
    """Bearer token required on every endpoint but /health; None = no auth."""
    allow_weaker_isolation: bool = False
    """Start even when an isolation layer is unavailable (reported by /health)."""
    max_queue: int | None = None
    """Requests that may wait for a worker; beyond it 429. None = workers * DEFAULT_MAX_QUEUE_PER_WORKER."""
    queue_timeout: float = Field(DEFAULT_QUEUE_TIMEOUT, gt=0)
    """Seconds a request may wait for a worker before 429."""
    default_run_timeout: float = Field(DEFAULT_RUN_TIMEOUT, gt=0)
    max_run_timeout: float = Field(DEFAULT_MAX_RUN_TIMEOUT, gt=0)
    grace: float = Field(DEFAULT_GRACE, gt=0)
    """Extra seconds beyond run_timeout before a silent zygote is declared dead and restarted."""
    max_code_bytes: int = Field(DEFAULT_MAX_CODE_BYTES, gt=0)
    max_stdin_bytes: int = Field(DEFAULT_MAX_STDIN_BYTES, ge=0)
    output_limit_bytes: int = Field(DEFAULT_OUTPUT_LIMIT_BYTES, gt=0)
    """Cap on each of stdout and stderr; longer output is cut and ``truncated`` set."""
    memory_mb: int = Field(DEFAULT_MEMORY_MB, ge=256)
    """RLIMIT_AS per sandboxed process, MiB."""
    max_processes: int = Field(DEFAULT_MAX_PROCESSES, ge=4)
    file_size_mb: int = Field(DEFAULT_FILE_SIZE_MB, ge=1)
    open_files: int = Field(DEFAULT_OPEN_FILES, ge=16)
    tmpfs_mb: int = Field(DEFAULT_TMPFS_MB, ge=8)
    """Size of each worker's private /tmp, where work dirs live."""
    max_sessions: int = Field(DEFAULT_MAX_SESSIONS, ge=0)
    session_idle_timeout: float = Field(DEFAULT_SESSION_IDLE_TIMEOUT, gt=0)
    max_journal_bytes: int = Field(DEFAULT_MAX_JOURNAL_BYTES, ge=0)
    """Sessions whose cells exceed this cannot be rebuilt after a crash."""
    worker_start_timeout: float = Field(DEFAULT_WORKER_START_TIMEOUT, gt=0)
    shutdown_timeout: float = Field(DEFAULT_SHUTDOWN_TIMEOUT, gt=0)
    uid_base: int | None = Field(None, ge=1000)
    """First sandbox uid; None = DEFAULT_UID_BASE + a block picked from our pid, so that two servers on
    one host do not share uids (RLIMIT_NPROC counts per uid)."""
    disabled_layers: tuple[str, ...] = ()
    """Layers to switch off on purpose (any of DISABLEABLE_LAYERS), to exercise the fallbacks in tests."""
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    """Modules every full zygote imports once, so snippets get them for free."""
    lean_image: bool = True
    """Give each worker a second, lean zygote (standard-library preloads only) for code that imports nothing
    else: its children fork in about half the CPU time (tools.server.images)."""
    max_files: int = Field(DEFAULT_MAX_FILES, ge=0)
    max_files_bytes: int = Field(DEFAULT_MAX_FILES_BYTES, ge=0)
    fetch_limit_bytes: int = Field(DEFAULT_FETCH_LIMIT_BYTES, ge=0)
    parent_pid: int | None = Field(None, ge=1)
    """Exit when this process exits (set by tools.embedded: the server dies with the program that started it,
    even when that program is SIGKILLed)."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        span = self.workers * self.uids_per_worker
        if self.uid_base is None and span > UID_BLOCK:
            raise ValueError(f"{span} sandbox uids needed; set uid_base explicitly (automatic blocks hold {UID_BLOCK})")
        if self.default_run_timeout > self.max_run_timeout:
            raise ValueError(
                f"default_run_timeout={self.default_run_timeout} exceeds max_run_timeout={self.max_run_timeout}"
            )
        return self

    @model_validator(mode="after")
    def _check_layers(self) -> Settings:
        unknown = set(self.disabled_layers) - set(DISABLEABLE_LAYERS)
        if unknown:
            raise ValueError(f"unknown layers to disable: {sorted(unknown)}; choose from {DISABLEABLE_LAYERS}")
        return self

    @property
    def queue_limit(self) -> int:
        return self.max_queue if self.max_queue is not None else self.workers * DEFAULT_MAX_QUEUE_PER_WORKER

    @property
    def resolved_uid_base(self) -> int:
        if self.uid_base is not None:
            return self.uid_base
        return DEFAULT_UID_BASE + (os.getpid() % 1_000_000) * UID_BLOCK

    @property
    def uids_per_worker(self) -> int:
        """One one-shot uid per image, then one per session slot (see ZygoteConfig.uid_for)."""
        return self.sessions_per_worker + SESSION_SLOT

    @property
    def body_limit_bytes(self) -> int:
        """Largest /run_code body accepted: code, stdin and base64 files, plus JSON overhead."""
        return self.max_code_bytes + self.max_stdin_bytes + self.max_files_bytes * 4 // 3 + BODY_OVERHEAD_BYTES

    @property
    def sessions_per_worker(self) -> int:
        return max(1, -(-self.max_sessions // self.workers))


async def get_settings(request: Request) -> Settings:
    """The app's settings (set by create_app); override in tests with app.dependency_overrides."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
