"""``files`` and ``fetch_files``: paths confined to the work dir, written and read without following links.

The server checks the request's paths (:func:`check_path`) so a bad one is a 4xx before anything runs.
The sandboxed child itself writes the files before the code runs and reads the fetched ones after it
(:func:`write_files`, :func:`fetch_files`), so even a mistake here could reach no more than the code
itself can. Every path component is opened with ``O_NOFOLLOW`` relative to the work dir's descriptor:
a symbolic link (made by an earlier session cell, say) is refused, never followed.
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import stat

MAX_PATH_CHARS = 1024
READ_CHUNK = 1 << 20


class PathRefused(ValueError):
    """A path that is empty, escapes the work dir or passes through a symbolic link."""


def check_path(path: str) -> str:
    """The path normalised (relative to the work dir, or absolute); raises PathRefused with the reason.

    Absolute paths are left for the child, which accepts them only beneath its work dir.
    """
    if not isinstance(path, str) or not path or "\0" in path or len(path) > MAX_PATH_CHARS:
        raise PathRefused(f"{path!r}: not a usable path (empty, NUL byte or over {MAX_PATH_CHARS} characters)")
    normal = posixpath.normpath(path)
    if posixpath.isabs(normal):
        return normal
    if normal == "." or normal == ".." or normal.startswith("../"):
        raise PathRefused(f"{path!r}: escapes the working directory")
    return normal


def _relative(path: str, workdir: str) -> list[str]:
    """Components of ``path`` below ``workdir``; raises PathRefused when it is not beneath it."""
    normal = check_path(path)
    if posixpath.isabs(normal):
        if not normal.startswith(workdir.rstrip("/") + "/"):
            raise PathRefused(f"{path!r}: absolute path outside the working directory")
        normal = normal[len(workdir.rstrip("/")) + 1 :]
    return normal.split("/")


def _open_parent(root: int, parts: list[str], path: str, *, create: bool) -> int:
    """Descriptor of the directory holding ``parts[-1]``, walking from ``root`` without following links."""
    fd = os.dup(root)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefused(f"{path!r}: {part!r} is a symbolic link or not a directory") from exc
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_files(workdir: str, files: dict[str, str | None]) -> None:
    """Write base64 ``files`` beneath ``workdir`` (None values are skipped, as SandboxFusion does).

    Raises PathRefused for a path that escapes or passes through a link; OSError for a full disk.
    """
    root = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, content in files.items():
            if content is None:
                continue
            parts = _relative(path, workdir)
            parent = _open_parent(root, parts, path, create=True)
            try:
                try:
                    fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=parent)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.EISDIR):
                        raise PathRefused(f"{path!r}: is a symbolic link or a directory") from exc
                    raise
                with open(fd, "wb") as f:
                    f.write(base64.b64decode(content))
            finally:
                os.close(parent)
    finally:
        os.close(root)


def fetch_files(workdir: str, paths: list[str], limit_bytes: int) -> tuple[dict[str, str], list[str]]:
    """(path -> base64 contents, notes) for the regular files among ``paths``, at most ``limit_bytes`` in all.

    A missing file is left out (as SandboxFusion does); links, non-regular files and files over the
    remaining budget are left out with a note saying why.
    """
    found: dict[str, str] = {}
    notes: list[str] = []
    budget = limit_bytes
    root = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in paths:
            try:
                data = _read_one(root, workdir, path, budget)
            except PathRefused as exc:
                notes.append(f"fetch_files {exc}")
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                notes.append(f"fetch_files {path!r}: {os.strerror(exc.errno or 0)}")
                continue
            budget -= len(data)
            found[path] = base64.b64encode(data).decode("ascii")
    finally:
        os.close(root)
    return found, notes


def _read_one(root: int, workdir: str, path: str, budget: int) -> bytes:
    parts = _relative(path, workdir)
    parent = _open_parent(root, parts, path, create=False)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathRefused(f"{path!r}: is a symbolic link") from exc
            raise
    finally:
        os.close(parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused(f"{path!r}: not a regular file")
        if info.st_size > budget:
            raise PathRefused(f"{path!r}: {info.st_size} bytes exceed the {budget} bytes left of the fetch limit")
        chunks = []
        remaining = budget
        while remaining >= 0:
            chunk = os.read(fd, min(READ_CHUNK, remaining + 1))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining < 0:
            raise PathRefused(f"{path!r}: grew past the fetch limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)
