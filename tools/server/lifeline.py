"""The server's lifeline to the program that started it (``--parent-pid``, set by tools.embedded).

A trainer killed with SIGKILL or by the OOM killer runs no clean-up, so its embedded server would be
orphaned, holding its port and its zygotes. With a parent pid the server watches that process through a
pidfd (readable the moment it exits; a once-a-second ``getppid`` check where pidfds are missing) and
shuts down when it is gone: SIGTERM to itself (uvicorn's graceful stop, which stops the zygotes and
removes their work dirs), then a hard exit if that hangs. The zygotes also carry PDEATHSIG, so they die
with the server whatever happens to it.

PR_SET_PDEATHSIG is not used for the server itself: it fires when the *thread* that started the server
exits, and trainers start it from whichever thread first needs the sandbox.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time

log = logging.getLogger("tools.server.lifeline")

DEFAULT_POLL_INTERVAL = 1.0
"""Seconds between getppid checks where pidfd_open is unavailable."""
SHUTDOWN_SIGNAL = signal.SIGTERM
"""Sent to ourselves when the parent is gone: uvicorn's graceful shutdown."""


def parent_alive(pid: int) -> bool:
    """Whether ``pid`` is still our parent (after its death we are re-parented to a subreaper or init)."""
    return os.getppid() == pid


def watch(pid: int, grace: float) -> threading.Thread:
    """Start a daemon thread that shuts this process down once ``pid`` exits; ``grace``: seconds allowed for
    the graceful shutdown before a hard exit."""
    thread = threading.Thread(target=_watch, args=(pid, grace), name="sandbox-lifeline", daemon=True)
    thread.start()
    return thread


def _watch(pid: int, grace: float) -> None:
    _wait_for_exit(pid)
    log.warning("parent process %d is gone; shutting the sandbox server down", pid)
    os.kill(os.getpid(), SHUTDOWN_SIGNAL)
    time.sleep(grace)
    log.error("graceful shutdown took longer than %ss; exiting now", grace)
    os._exit(1)


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and parent_alive(pid):  # the pidfd names our parent, not a recycled pid
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
        os.close(fd)
        return
    while parent_alive(pid):
        time.sleep(DEFAULT_POLL_INTERVAL)
