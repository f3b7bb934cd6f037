"""Unit tests of pieces that need no server: the seccomp program, settings, protocol frames."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from tools.server import protocol
from tools.server.isolation import seccomp
from tools.server.settings import Settings


def test_seccomp_program_jumps_stay_inside() -> None:
    program = seccomp.build_program()
    assert program[-1] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
    assert program[1][3] == seccomp.AUDIT_ARCH_X86_64
    for index, (code, jt, jf, _k) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < len(program)
    denied = {k for code, _, _, k in program if code == seccomp.BPF_JEQ_K}
    for name in ("ptrace", "mount", "unshare", "bpf", "io_uring_setup", "kexec_load", "keyctl", "setns"):
        assert seccomp.DENIED_X86_64[name] in denied
    assert len(seccomp.compile_program()) == 8 * len(program)


def test_settings_validation() -> None:
    with pytest.raises(ValidationError):
        Settings(default_run_timeout=100, max_run_timeout=10)
    with pytest.raises(ValidationError):
        Settings(disabled_layers=("selinux",))
    s = Settings(workers=3, max_sessions=10)
    assert s.sessions_per_worker == 4 and s.queue_limit == 48
    assert "token" not in repr(Settings(token="secret")) or "secret" not in repr(Settings(token="secret"))


def test_frames_roundtrip_and_limits() -> None:
    r, w = os.pipe()
    protocol.write_frame_fd(w, {"a": "é" * 10})
    os.close(w)
    assert protocol.read_frame_fd(r) == {"a": "é" * 10}
    assert protocol.read_frame_fd(r) is None
    os.close(r)
    r, w = os.pipe()
    os.write(w, protocol.HEADER.pack(10**9))
    os.close(w)
    with pytest.raises(protocol.ProtocolError):
        protocol.read_frame_fd(r, max_bytes=1024)
    os.close(r)
