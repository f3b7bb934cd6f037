"""Where agentrl keeps what it builds once and reuses: tiny models, tokenizers, run outputs by default.

The location is ``$AGENTRL_HOME`` when set, else ``~/.cache/agentrl``. Nothing here downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "AGENTRL_HOME"
DEFAULT_HOME = Path("~/.cache/agentrl")


def agentrl_home() -> Path:
    """The cache root (created on first use)."""
    root = Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
