"""Processes seen from a zygote, a forker or a sandboxed child: reaping, descendants, processes of a uid.

Only ``os`` is imported: these run in processes whose children must not inherit extra modules.
"""

from __future__ import annotations

import os


def reap_exited() -> list[tuple[int, int]]:
    """(pid, wait status) of every child that has ended, without blocking."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, status))


def descendants(root: int, keep: set[int]) -> list[int]:
    """Pids below ``root`` in the process tree, skipping the subtrees rooted at ``keep``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [p for p in children.get(root, []) if p not in keep]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += [p for p in children.get(pid, []) if p not in keep]
    return found


def uid_processes(uid: int) -> list[int]:
    """Pids (zombies included) whose real uid is ``uid``, from this pid namespace's /proc."""
    prefix = f"Uid:\t{uid}\t"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    if any(line.startswith(prefix) for line in f):
                        found.append(int(entry))
            except OSError:
                continue
    return found
