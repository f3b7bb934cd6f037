"""``python -m tools.server``: the sandboxed Python tool server (FastAPI + uvicorn).

    python -m tools.server [--host 127.0.0.1] [--port 8080] [--workers N] [--token T]
                           [--allow-weaker-isolation] [...]

The token may also come from $AGENTRL_SANDBOX_TOKEN (keeps it out of the process list).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from tools.server import lifeline
from tools.server.app import create_app
from tools.server.settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, TOKEN_ENV, Settings


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m tools.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default loopback)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="snippets that run at once")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (or ${TOKEN_ENV})")
    p.add_argument("--allow-weaker-isolation", action=argparse.BooleanOptionalAction, default=None,
                   help="start even if an isolation layer is unavailable (/health reports which)")
    p.add_argument("--max-queue", type=int, default=None, help="requests that may wait before 429")
    p.add_argument("--queue-timeout", type=float, default=None, help="seconds a request may wait for a worker")
    p.add_argument("--max-run-timeout", type=float, default=None)
    p.add_argument("--memory-mb", type=int, default=None, help="address-space limit per process")
    p.add_argument("--max-processes", type=int, default=None)
    p.add_argument("--output-limit-bytes", type=int, default=None)
    p.add_argument("--max-sessions", type=int, default=None)
    p.add_argument("--session-idle-timeout", type=float, default=None)
    p.add_argument("--preload", default=None, help="comma-separated modules each zygote imports")
    p.add_argument("--uid-base", type=int, default=None)
    p.add_argument("--lean-image", action=argparse.BooleanOptionalAction, default=None,
                   help="a second, lean zygote per worker for standard-library-only code (default on)")
    p.add_argument("--max-files-bytes", type=int, default=None, help="decoded bytes of a request's files")
    p.add_argument("--fetch-limit-bytes", type=int, default=None, help="bytes of fetch_files returned per request")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process exits (tools.embedded sets it to the program that started us)")
    p.add_argument("--disable-layers", default=None,
                   help="comma-separated layers to switch off (namespaces, uids, seccomp, landlock); for tests")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if v is not None and k != "log_level"}
    if not values.get("token"):
        values.pop("token", None)  # an empty $AGENTRL_SANDBOX_TOKEN (compose default) means no auth
    if "preload" in values:
        values["preload"] = tuple(m.strip() for m in values["preload"].split(",") if m.strip())
    if "disable_layers" in values:
        values["disabled_layers"] = tuple(m.strip() for m in values.pop("disable_layers").split(",") if m.strip())
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    if settings.parent_pid is not None:
        if not lifeline.parent_alive(settings.parent_pid):
            logging.error("parent process %d is already gone", settings.parent_pid)
            return 4
        lifeline.watch(settings.parent_pid, grace=2 * settings.shutdown_timeout)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally even when the lifespan (our isolation check) failed to start.
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
