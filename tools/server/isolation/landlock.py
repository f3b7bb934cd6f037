"""Landlock: the child may read and execute only system paths and write only beneath its work dir.

Landlock (Linux 5.13+) is an unprivileged LSM; a process restricts itself and its future children.
ABI versions add rights: 2 REFER, 3 TRUNCATE, 4 TCP bind/connect, 5 IOCTL_DEV, 6 signal and abstract
unix socket scoping. We handle every right the running kernel knows, so anything not granted is denied.
See Documentation/userspace-api/landlock.rst.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Iterable

from tools.server.isolation import syscalls

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13
TRUNCATE = 1 << 14
IOCTL_DEV = 1 << 15

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""Rights that make sense on a file (a rule on a file with directory rights is EINVAL)."""
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
SYSTEM_READ_PATHS: tuple[str, ...] = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys")
"""Read-only system paths the interpreter and common libraries need; the project tree is not among them."""


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable or disabled."""
    result = syscalls.raw_syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return max(result, 0)


def handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def interpreter_paths() -> list[str]:
    """The Python installation (prefixes, hence stdlib and site-packages), readable by the child."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted(p for p in paths if p and os.path.isdir(p))


def create_ruleset(read_paths: Iterable[str], write_paths: Iterable[str], abi: int) -> int:
    """A ruleset fd: ``read_paths`` read/execute, ``write_paths`` full access, /dev files read/write.

    Also denies all TCP bind/connect (ABI 4+) and signals or abstract sockets leaving the domain (ABI 6+).
    The zygote may build one and let every child enforce it (see :func:`enforce`).
    """
    fs = handled_fs(abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs, net)
    else:
        attr = struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = syscalls.syscall(SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), 0)
    try:
        rules: list[tuple[str, int]] = [(p, READ_ONLY) for p in read_paths]
        rules += [(p, fs) for p in write_paths]
        rules.append(("/dev", READ_ONLY | WRITE_FILE | (IOCTL_DEV if abi >= 5 else 0)))
        for path, rights in rules:
            _add_path_rule(ruleset, path, rights & fs)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def enforce(ruleset: int) -> None:
    """Restrict the calling process (and its future children) to the ruleset; needs no_new_privs."""
    syscalls.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)


def restrict(read_paths: Iterable[str], write_paths: Iterable[str], abi: int) -> None:
    """Build a ruleset and enforce it on the calling process at once."""
    ruleset = create_ruleset(read_paths, write_paths, abi)
    try:
        enforce(ruleset)
    finally:
        os.close(ruleset)


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)  # packed struct, 12 bytes
        syscalls.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, attr, 0)
    finally:
        os.close(fd)
