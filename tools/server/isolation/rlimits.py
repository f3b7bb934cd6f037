"""Resource limits (setrlimit) applied to every sandboxed child before it runs code."""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-process limits; RLIMIT_NPROC counts per uid, and every request or session has its own uid."""

    memory_bytes: int
    """RLIMIT_AS: address space per process; large allocations fail with MemoryError."""
    max_processes: int
    """RLIMIT_NPROC: processes and threads of the request's uid (stops fork and thread bombs)."""
    file_size_bytes: int
    """RLIMIT_FSIZE: largest file the code may write."""
    open_files: int
    """RLIMIT_NOFILE: open file descriptors per process."""
    cpu_seconds: float
    """RLIMIT_CPU hard cap (the wall clock is enforced by the zygote; this catches CPU burners early)."""


def apply(limits: Limits) -> None:
    """Set every limit, soft and hard alike, so the code cannot raise them back."""
    cpu = max(1, math.ceil(limits.cpu_seconds))
    for name, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ):
        resource.setrlimit(name, (value, value))


def lower_cpu(seconds: float, *, lock_hard: bool) -> None:
    """Tighten RLIMIT_CPU for one cell (a process may always lower its own limits).

    A one-shot child also lowers the hard limit; a session keeps its hard limit so later cells get CPU.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    value = max(1, math.ceil(spent + seconds) + 1)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (value, value if lock_hard else hard))


def set_memory(limit_bytes: int | None, *, lock_hard: bool) -> None:
    """This cell's address-space limit (``memory_limit_MB``), never above the server's hard limit.

    None restores the server's limit (soft = hard). A one-shot child locks the hard limit too; a session
    keeps its hard limit so a later cell may ask for more again (up to the server's).
    """
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    value = hard if limit_bytes is None or hard != resource.RLIM_INFINITY and limit_bytes > hard else limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (value, value if lock_hard else hard))
