"""A seccomp-BPF filter, written by hand and installed with prctl (no libseccomp needed).

Denied syscalls fail with EPERM (ENOSYS for clone3, so libc falls back to clone, whose flags we can
inspect). A foreign audit architecture kills the process: a filter for x86_64 numbers is meaningless
for i386 or x32 calls. See seccomp(2) and Documentation/userspace-api/seccomp_filter.rst.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from tools.server.isolation import syscalls

# <linux/filter.h> classic BPF opcodes
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K

# <linux/seccomp.h>
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data offsets: nr, arch, instruction_pointer, args[6] (little-endian low words).
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0 = 16

AF_PACKET = 17

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENIED_X86_64: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "kexec_load": 246,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
}
SYS_CLONE = 56
SYS_SOCKET = 41
SYS_CLONE3 = 435
NAMESPACE_FLAGS = (
    syscalls.CLONE_NEWNS
    | syscalls.CLONE_NEWCGROUP
    | syscalls.CLONE_NEWUTS
    | syscalls.CLONE_NEWIPC
    | syscalls.CLONE_NEWUSER
    | syscalls.CLONE_NEWPID
    | syscalls.CLONE_NEWNET
)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def supported() -> bool:
    """The filter's syscall table is for x86_64; elsewhere the layer reports unavailable."""
    return platform.machine() == "x86_64"


def build_program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions; jumps are relative to the next instruction."""

    def stmt(code: int, k: int) -> tuple[int, int, int, int]:
        return (code, 0, 0, k)

    def jump(code: int, k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
        return (code, jt, jf, k)

    deny = SECCOMP_RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = [
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, deny),
    ]
    for number in sorted(DENIED_X86_64.values()):
        prog += [jump(BPF_JEQ_K, number, 0, 1), stmt(BPF_RET_K, deny)]
    # clone3 passes its flags in memory the filter cannot read: make libc fall back to clone.
    prog += [jump(BPF_JEQ_K, SYS_CLONE3, 0, 1), stmt(BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS)]
    # clone: refuse any namespace flag (low 32 bits of args[0]).
    prog += [
        jump(BPF_JEQ_K, SYS_CLONE, 0, 3),
        stmt(BPF_LD_W_ABS, OFFSET_ARG0),
        jump(BPF_JSET_K, NAMESPACE_FLAGS, 0, 1),
        stmt(BPF_RET_K, deny),
    ]
    # socket(AF_PACKET, ...): raw link-layer access.
    prog += [
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JEQ_K, SYS_SOCKET, 0, 3),
        stmt(BPF_LD_W_ABS, OFFSET_ARG0),
        jump(BPF_JEQ_K, AF_PACKET, 0, 1),
        stmt(BPF_RET_K, deny),
    ]
    prog.append(stmt(BPF_RET_K, SECCOMP_RET_ALLOW))
    return prog


def compile_program() -> bytes:
    """The program packed as struct sock_filter[] (built once in the zygote, installed per child)."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in build_program())


class PreparedFilter:
    """The program as the kernel's struct sock_fprog, built once in the zygote; children inherit the memory."""

    def __init__(self, program: bytes) -> None:
        count = len(program) // 8
        self._array = (_SockFilter * count).from_buffer_copy(program)
        self._fprog = _SockFprog(count, ctypes.cast(self._array, ctypes.POINTER(_SockFilter)))
        self.address = ctypes.addressof(self._fprog)


def install(prepared: PreparedFilter) -> None:
    """Install the filter on the calling process; needs no_new_privs (set here) or CAP_SYS_ADMIN."""
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    syscalls.prctl_ptr(syscalls.PR_SET_SECCOMP, syscalls.SECCOMP_MODE_FILTER, prepared.address)
