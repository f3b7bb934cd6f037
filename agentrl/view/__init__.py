"""Run viewer: a page with a run's curves and a paged, turn-by-turn episode browser.

    python -m agentrl.view RUN_DIR [RUN_DIR ...] [--port 8765]     serve on 127.0.0.1
    python -m agentrl.view RUN_DIR --export out.html                one self-contained file

See docs/viewer.md. Importing this package does not import torch or transformers (the tokenizer is
loaded on first use), nor FastAPI (``agentrl.view.app`` does).
"""

from agentrl.view.index import EpisodeIndex, EpisodeNotFound, EpisodeQuery
from agentrl.view.run import Run

__all__ = ["EpisodeIndex", "EpisodeNotFound", "EpisodeQuery", "Run"]
