"""Linux isolation layers for sandboxed children.

Each module holds one layer and can report whether the kernel supports it:

- ``namespaces``: network, mount and pid namespaces (entered once by the zygote), private tmpfs mounts and a
  read-only view of the host's mounts.
- ``privileges``: drop to an unprivileged uid/gid, empty the capability sets.
- ``rlimits``: CPU time, address space, processes, file size, open files.
- ``landlock``: filesystem access confined to the read-only system paths and the request's work dir.
- ``seccomp``: a BPF filter that denies dangerous syscalls (ptrace, mount, unshare, bpf, io_uring, ...).
"""

LAYERS: tuple[str, ...] = (
    "network_namespace",
    "mount_namespace",
    "pid_namespace",
    "unprivileged_uid",
    "seccomp",
    "landlock",
    "rlimits",
    "kill_by_uid",
)
"""Every layer /health reports, in the order children apply them."""
