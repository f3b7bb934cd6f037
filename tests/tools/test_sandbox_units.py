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


def test_image_routing() -> None:
    from tools.server import images

    assert images.image_for("python", "print(1+1)", session=False, lean_available=True) == images.LEAN
    assert images.image_for("python", "import math, json\nfrom collections import Counter", session=False,
                            lean_available=True) == images.LEAN
    for code in ("import sympy", "x = 1; import numpy as np", "import os, numpy", "def f():\n    from sympy import S",
                 "__import__('numpy')", "import importlib"):
        assert images.image_for("python", code, session=False, lean_available=True) == images.FULL, code
    assert images.image_for("python", "print(1)", session=True, lean_available=True) == images.FULL
    assert images.image_for("pytest", "def test(): pass", session=False, lean_available=True) == images.FULL
    assert images.image_for("bash", "python3 -c 'import numpy'", session=False, lean_available=True) == images.LEAN
    assert images.image_for("python", "print(1)", session=False, lean_available=False) == images.FULL
    assert images.lean_preload(("math", "numpy", "json", "sympy", "os.path")) == ["math", "json", "os.path"]


def test_worker_images_and_uid_layout() -> None:
    from tools.server.cli import parse_args
    from tools.server.workers import zygote_config

    settings = parse_args(["--workers", "2", "--max-sessions", "4", "--uid-base", "2000000", "--no-lean-image"])
    assert settings.lean_image is False and settings.uids_per_worker == 2 + 2
    assert list(zygote_config(settings, 0).images) == ["full"]
    config = zygote_config(parse_args(["--workers", "2", "--max-sessions", "4", "--uid-base", "2000000"]), 1)
    assert list(config.images) == ["full", "lean"] and "numpy" not in config.images["lean"]
    assert [config.uid_for(s) for s in range(4)] == [2000004, 2000005, 2000006, 2000007]
    assert config.oneshot_slot("full") == 0 and config.oneshot_slot("lean") == 1


def test_work_paths() -> None:
    from tools.server import workfiles

    assert workfiles.check_path("a/./b/../c.txt") == "a/c.txt"
    assert workfiles.check_path("/tmp/run-1/x") == "/tmp/run-1/x"  # the child checks it is beneath its dir
    for bad in ("", "..", "../x", "a/../../x", "a\0b", "x" * 2000):
        with pytest.raises(workfiles.PathRefused):
            workfiles.check_path(bad)


def test_frame_reader_never_blocks_on_a_partial_frame() -> None:
    reader = protocol.FrameReader(max_bytes=100)
    frame = protocol.encode({"rc": 0})
    assert reader.feed(frame[:3]) is None and reader.feed(frame[3:-1]) is None
    assert reader.feed(frame[-1:]) == {"rc": 0}
    with pytest.raises(protocol.ProtocolError):
        protocol.FrameReader(max_bytes=10).feed(protocol.HEADER.pack(11))
