"""Namespaces entered once per zygote: network (no interfaces but a down loopback), mount, pid.

The zygote launcher calls :func:`enter` and forks; the fork is pid 1 of a fresh pid namespace, so when
it dies the kernel kills everything left in that namespace. In the new mount namespace the zygote then
mounts its own /proc, a size-capped tmpfs on /tmp (work dirs live there) and /dev/shm, re-exposes the
Python installation if a parent directory hides it from other users (e.g. a pyenv under /root), and
remounts every other mount read-only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from tools.server.isolation import syscalls


@dataclass
class NamespaceReport:
    network: bool = False
    mount: bool = False
    pid: bool = False
    user: bool = False
    errors: list[str] = field(default_factory=list)


def enter(*, want_user: bool) -> NamespaceReport:
    """Unshare what the kernel allows. As non-root a user namespace comes first (mapping our own ids)."""
    report = NamespaceReport()
    if want_user:
        uid, gid = os.getuid(), os.getgid()
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
            report.user = True
        except OSError as exc:
            report.errors.append(f"user namespace: {exc}")
    for flag, name in (
        (syscalls.CLONE_NEWNET, "network"),
        (syscalls.CLONE_NEWNS, "mount"),
        (syscalls.CLONE_NEWPID, "pid"),
    ):
        try:
            syscalls.unshare(flag)
            setattr(report, name, True)
        except OSError as exc:
            report.errors.append(f"{name} namespace: {exc}")
    return report


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _mount_points() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, parents before children."""
    points: list[tuple[str, set[str]]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            target = parts[4].encode().decode("unicode_escape")
            points.append((target, set(parts[5].split(","))))
    return points


_OPTION_FLAGS = {
    "nosuid": syscalls.MS_NOSUID,
    "nodev": syscalls.MS_NODEV,
    "noexec": syscalls.MS_NOEXEC,
    "noatime": syscalls.MS_NOATIME,
    "nodiratime": syscalls.MS_NODIRATIME,
    "relatime": syscalls.MS_RELATIME,
}


def _expose(paths: list[str]) -> None:
    """Make each path traversable by other users without exposing its hidden parent's other contents.

    For the first ancestor that others cannot search (mode lacks o+x), mount a tiny tmpfs over it and
    bind the one child directory we need back in (via an O_PATH fd opened before it was covered).
    """
    for path in paths:
        parts = os.path.abspath(path).strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            mode = os.stat(ancestor).st_mode
            if mode & stat.S_IXOTH:
                continue
            child = "/" + "/".join(parts[: depth + 1])
            fd = os.open(child, os.O_PATH | os.O_DIRECTORY)
            try:
                syscalls.mount("tmpfs", ancestor, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=64k,mode=755")
                os.mkdir(child, 0o755)
                syscalls.mount(f"/proc/self/fd/{fd}", child, None, syscalls.MS_BIND | syscalls.MS_REC)
            finally:
                os.close(fd)
            break


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def setup_mounts(*, tmp_size_bytes: int, expose: list[str], pid_namespace: bool) -> tuple[bool, list[str]]:
    """Private mounts for the zygote's namespace.

    Returns (whether /tmp is now a private tmpfs, what could not be done). Container runtimes often forbid
    mount(2) even inside a user namespace (AppArmor, seccomp); then nothing here is done.
    """
    errors: list[str] = []
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    except OSError as exc:
        return False, [f"mount propagation: {exc}"]
    if pid_namespace:
        try:
            syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
        except OSError as exc:
            errors.append(f"/proc: {exc}")
    fresh = [("/tmp", f"size={tmp_size_bytes},nr_inodes=65536,mode=1777"), ("/dev/shm", "size=1m,mode=1777")]
    private_tmp = False
    for target, options in fresh:
        # An interpreter installed under the directory being covered (a venv in a checkout under /tmp, as
        # CI clones often are) would vanish with it: hold it by an O_PATH fd and bind it back in afterwards.
        keep = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in expose if _inside(p, target)}
        try:
            syscalls.mount("tmpfs", target, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, options)
            private_tmp = private_tmp or target == "/tmp"
            for path, fd in keep.items():
                os.makedirs(path, mode=0o755, exist_ok=True)
                syscalls.mount(f"/proc/self/fd/{fd}", path, None, syscalls.MS_BIND | syscalls.MS_REC)
        except OSError as exc:
            errors.append(f"{target}: {exc}")
        finally:
            for fd in keep.values():
                os.close(fd)
    try:
        _expose(expose)
    except OSError as exc:
        errors.append(f"expose interpreter: {exc}")
    keep_writable = {"/tmp", "/dev/shm", "/proc", "/dev", "/dev/pts"}
    for target, options in _mount_points():
        if target in keep_writable or target.startswith("/proc/") or "ro" in options:
            continue
        flags = syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY
        for name, bit in _OPTION_FLAGS.items():
            if name in options:
                flags |= bit
        try:
            syscalls.mount(None, target, None, flags)
        except OSError as exc:
            errors.append(f"read-only {target}: {exc}")
    return private_tmp, errors
