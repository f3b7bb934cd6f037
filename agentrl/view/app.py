"""The viewer's FastAPI app: the page, its static assets and a small JSON API over one or more runs.

    GET /                                   the page (static/index.html)
    GET /static/{file}                      viewer.js, viewer.css
    GET /api/runs                           [{"id", "name", "path", "steps"}]
    GET /api/config?run=0                   {"text": yaml text, "data": parsed mapping}
    GET /api/eval?run=0                     eval.json or null
    GET /api/metrics                        {"runs": [{"name", "steps", "series"}], "panels": [...]}
    GET /api/episodes?run=&step=&stop_reason=&env=&min_reward=&max_reward=&correct=&offset=&limit=
                                            one page of episode summaries, the total and filter facets
    GET /api/episode/{step}/{index}?run=0   one episode with per-token text, kind, logprob, ratio

Handlers are plain ``def`` so FastAPI runs them in its thread pool: file reads never block the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from agentrl.view.index import EpisodeNotFound, EpisodeQuery
from agentrl.view.metrics import panels
from agentrl.view.run import Run

STATIC_DIR = Path(__file__).parent / "static"
MAX_PAGE = 500
"""Largest page the episode list API serves."""


class Viewer:
    """The runs one server shows; the first is the one whose episodes open by default."""

    def __init__(self, run_dirs: Sequence[str | Path]) -> None:
        if not run_dirs:
            raise ValueError("give at least one run directory")
        names = [Path(d).resolve().name for d in run_dirs]
        # Same folder names (run/a/latest, run/b/latest) get their parent in front so the legend tells them apart.
        if len(set(names)) != len(names):
            names = [f"{Path(d).resolve().parent.name}/{Path(d).resolve().name}" for d in run_dirs]
        self.runs = [Run(d, name) for d, name in zip(run_dirs, names, strict=True)]

    def run(self, run_id: int) -> Run:
        if not 0 <= run_id < len(self.runs):
            raise HTTPException(404, f"run {run_id} does not exist; runs are 0..{len(self.runs) - 1}")
        return self.runs[run_id]

    def metrics(self) -> dict[str, Any]:
        runs = [{"name": r.name, **r.metrics().to_json()} for r in self.runs]
        names = {name for r in runs for name in r["series"]}
        return {"runs": runs, "panels": panels(names)}


def get_viewer(request: Request) -> Viewer:
    return request.app.state.viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
RunId = Annotated[int, Query(ge=0, description="run number, in the order given on the command line")]

api = APIRouter(prefix="/api", tags=["api"])


@api.get("/runs")
def list_runs(viewer: ViewerDep) -> list[dict[str, Any]]:
    return [{"id": i, "name": r.name, "path": str(r.dir), "steps": r.index.steps()}
            for i, r in enumerate(viewer.runs)]


@api.get("/config")
def get_config(viewer: ViewerDep, run: RunId = 0) -> dict[str, Any]:
    return viewer.run(run).config()


@api.get("/eval")
def get_eval(viewer: ViewerDep, run: RunId = 0) -> dict[str, Any] | None:
    return viewer.run(run).eval()


@api.get("/metrics")
def get_metrics(viewer: ViewerDep) -> dict[str, Any]:
    return viewer.metrics()


@api.get("/episodes")
def list_episodes(
    viewer: ViewerDep,
    run: RunId = 0,
    step: Annotated[int | None, Query()] = None,
    stop_reason: Annotated[str | None, Query()] = None,
    env: Annotated[str | None, Query()] = None,
    min_reward: Annotated[float | None, Query()] = None,
    max_reward: Annotated[float | None, Query()] = None,
    correct: Annotated[bool | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    q = EpisodeQuery(step=step, stop_reason=stop_reason or None, env=env, min_reward=min_reward,
                     max_reward=max_reward, correct=correct, offset=offset, limit=limit)
    return viewer.run(run).index.query(q)


@api.get("/episode/{step}/{index}")
def get_episode(viewer: ViewerDep, step: int, index: int, run: RunId = 0) -> dict[str, Any]:
    try:
        return viewer.run(run).episode(step, index)
    except EpisodeNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


page = APIRouter(tags=["page"])


@page.get("/", include_in_schema=False)
def index_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@page.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)


def create_app(run_dirs: Sequence[str | Path], *, warm: bool = True) -> FastAPI:
    """The app for ``run_dirs``. ``warm`` loads the tokenizers in a background thread right away, so
    the first opened episode does not wait for transformers to import (seconds on a busy machine)."""
    app = FastAPI(title="agentrl run viewer", docs_url="/api/docs", redoc_url=None)
    app.state.viewer = viewer = Viewer(run_dirs)
    if warm:
        threading.Thread(target=lambda: [r.tokens for r in viewer.runs], name="viewer-warm", daemon=True).start()
    app.include_router(api)
    app.include_router(page)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
