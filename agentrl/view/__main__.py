"""``python -m agentrl.view RUN_DIR [RUN_DIR ...] [--host 127.0.0.1] [--port 8765] [--export out.html]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
"""Loopback only by default: trajectories hold prompts and model output. Pass --host 0.0.0.0 to share."""
DEFAULT_PORT = 8765


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from agentrl.view.export import DEFAULT_EPISODES_PER_STEP

    p = argparse.ArgumentParser(prog="python -m agentrl.view", description=(
        "Show training runs: config, curves from metrics.jsonl (several runs overlaid) and a paged "
        "episode browser with per-token kinds, logprobs and learner ratios."))
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folder(s) written by agentrl.train; several are overlaid in the curves")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to serve on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--export", type=Path, metavar="OUT.html",
                   help="write one self-contained HTML file instead of serving")
    p.add_argument("--export-episodes", type=int, default=DEFAULT_EPISODES_PER_STEP, metavar="N",
                   help=f"episodes per logged step embedded by --export (default {DEFAULT_EPISODES_PER_STEP})")
    args = p.parse_args(argv)
    for d in args.run_dirs:
        if not d.is_dir():
            p.error(f"{d} is not a directory; pass the run folder holding metrics.jsonl and trajectories/")
    if args.export_episodes < 0:
        p.error("--export-episodes must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.export is not None:
        from agentrl.view.export import export

        out = export(args.run_dirs, args.export, args.export_episodes)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0
    import uvicorn

    from agentrl.view.app import create_app

    app = create_app(args.run_dirs)
    print(f"agentrl viewer: http://{args.host}:{args.port}/  (Ctrl-C to stop)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
