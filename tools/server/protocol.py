"""Length-prefixed JSON frames between the server, the zygotes and their children.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. Frames from sandboxed
children are untrusted: sizes are capped and malformed frames count as the child's failure.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest frame accepted (code, stdin and two capped outputs fit well below this)."""


class ProtocolError(Exception):
    """A peer sent something that is not a frame."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad frame: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _read_exact_fd(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            if not chunks and remaining == size:
                return None
            raise ProtocolError("stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame_fd(fd: int, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> dict[str, Any] | None:
    """Blocking read of one frame from a pipe; None at a clean end of stream."""
    header = _read_exact_fd(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds {max_bytes}")
    body = _read_exact_fd(fd, size)
    if body is None:
        raise ProtocolError("stream ended inside a frame")
    return decode(body)


class FrameReader:
    """Assembles one frame from chunks read without blocking (a peer that stalls mid-frame cannot hang us)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> dict[str, Any] | None:
        """Add bytes; returns the message once complete. Raises ProtocolError on an oversized or bad frame."""
        self.buffer += chunk
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if size > self.max_bytes:
            raise ProtocolError(f"frame of {size} bytes exceeds {self.max_bytes}")
        if len(self.buffer) < HEADER.size + size:
            return None
        if len(self.buffer) > HEADER.size + size:
            raise ProtocolError("bytes after the frame")
        return decode(bytes(self.buffer[HEADER.size :]))


def write_frame_fd(fd: int, message: dict[str, Any]) -> None:
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def send_frame(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send a frame on a unix stream socket, with file descriptors attached to its first byte."""
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def recv_frame(sock: socket.socket, max_bytes: int, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one frame (and any descriptors sent with it); (None, []) at end of stream."""
    fds: list[int] = []
    buf = b""
    while len(buf) < HEADER.size:
        if max_fds and not fds and not buf:
            chunk, got, _flags, _addr = socket.recv_fds(sock, HEADER.size, max_fds)
            fds.extend(got)
        else:
            chunk = sock.recv(HEADER.size - len(buf))
        if not chunk:
            if buf:
                raise ProtocolError("stream ended inside a frame")
            return None, fds
        buf += chunk
    (size,) = HEADER.unpack(buf)
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds {max_bytes}")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            raise ProtocolError("stream ended inside a frame")
        body += chunk
    return decode(bytes(body)), fds
