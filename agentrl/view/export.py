"""``--export out.html``: the viewer page as one self-contained file (inline CSS, JS and data; no URLs).

The file carries the answers the API would give: runs, configs, eval, all metrics, and for each run the
summaries plus full episodes of the first ``episodes_per_step`` episodes of every logged step (the whole
run would not fit in a page; the live server has no such bound). The data sits in a
``<script type="application/json">`` element and is escaped so no model text can close that element or
start markup: ``<``, ``>``, ``&`` and the JavaScript line separators become ``\\uXXXX`` escapes, which
``JSON.parse`` turns back into the same characters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentrl.view.app import STATIC_DIR, Viewer

DEFAULT_EPISODES_PER_STEP = 8
"""Episodes per logged step embedded in an export."""

_CSS_LINK = '<link rel="stylesheet" href="/static/viewer.css">'
_JS_TAG = '<script src="/static/viewer.js"></script>'
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (see the module docstring)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_ESCAPES.get(ch, ch) for ch in text) if any(c in text for c in _ESCAPES) else text


def export_data(viewer: Viewer, episodes_per_step: int = DEFAULT_EPISODES_PER_STEP) -> dict[str, Any]:
    runs, episodes = [], []
    for i, run in enumerate(viewer.runs):
        steps = run.index.steps()
        runs.append({"id": i, "name": run.name, "path": str(run.dir), "steps": steps})
        summaries, full = [], {}
        for step in steps:
            for entry in run.index.first(step, episodes_per_step):
                summaries.append(entry.summary())
                full[f"{step}/{entry.index}"] = run.episode(step, entry.index)
        episodes.append({"summaries": summaries, "full": full})
    return {
        "note": f"first {episodes_per_step} episodes of each logged step",
        "runs": runs,
        "configs": [r.config() for r in viewer.runs],
        "evals": [r.eval() for r in viewer.runs],
        "metrics": viewer.metrics(),
        "episodes": episodes,
    }


def render_html(data: dict[str, Any]) -> str:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    css = (STATIC_DIR / "viewer.css").read_text(encoding="utf-8")
    js = (STATIC_DIR / "viewer.js").read_text(encoding="utf-8")
    assert _CSS_LINK in page and _JS_TAG in page, "static/index.html lost the tags export.py replaces"
    assert "</script" not in js.lower() and "</style" not in css.lower()
    page = page.replace(_CSS_LINK, f"<style>\n{css}</style>")
    embedded = f'<script id="agentrl-data" type="application/json">{script_json(data)}</script>\n'
    return page.replace(_JS_TAG, f"{embedded}<script>\n{js}</script>")


def export(run_dirs: Sequence[str | Path], out: str | Path,
           episodes_per_step: int = DEFAULT_EPISODES_PER_STEP) -> Path:
    """Write the self-contained page for ``run_dirs`` to ``out``; returns the path."""
    out = Path(out)
    html = render_html(export_data(Viewer(run_dirs), episodes_per_step))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
