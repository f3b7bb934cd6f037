"""Dropping privileges: unprivileged uid/gid, no supplementary groups, no capabilities."""

from __future__ import annotations

import ctypes
import os

from tools.server.isolation import syscalls

CAP_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = 126


def _last_cap() -> int:
    try:
        with open(CAP_LAST_CAP_PATH) as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set() -> None:
    """Remove every capability from the bounding set (needs CAP_SETPCAP; ignored without it)."""
    for cap in range(_last_cap() + 1):
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        except OSError:
            return


def clear_capabilities() -> None:
    """capset() with empty effective, permitted and inheritable sets (matters in a user namespace)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    syscalls.syscall(SYS_CAPSET, header, data)


def become(uid: int, gid: int) -> None:
    """Switch real, effective and saved ids to ``uid``/``gid`` for good (root -> unprivileged)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def kill_uid(uid: int, sig: int) -> None:
    """Signal every process of ``uid`` in this pid namespace, atomically, from a root process.

    kill(-1) as a uid reaches exactly the processes with that real or saved uid (kill(2)), and the kernel
    walks the task list under a lock, so a fork bomb cannot add processes during the walk. The saved uid
    stays 0, so we can switch back afterwards.
    """
    os.setresuid(uid, uid, 0)
    try:
        os.kill(-1, sig)
    except ProcessLookupError:
        pass
    finally:
        os.setresuid(0, 0, 0)

