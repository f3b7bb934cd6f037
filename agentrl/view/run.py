"""One run directory as the viewer sees it: config, metrics, eval, tokenizer and the episode index.

Layout (written by ``agentrl.train``)::

    RUN_DIR/config.yaml               resolved config
    RUN_DIR/metrics.jsonl             one JSON object per step
    RUN_DIR/eval.json                 optional {"before": {...}, "after": {...}}
    RUN_DIR/trajectories/step_N.jsonl one Trajectory per line (agentrl.rollout.trajectory.write_jsonl)
    RUN_DIR/tokenizer/                Hugging Face tokenizer folder, for display text

Everything is read on demand; nothing here holds a whole run's episodes in memory.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

from agentrl.run_dir import MetricSeries, read_metrics
from agentrl.view.index import EpisodeIndex
from agentrl.view.tokens import TokenText

KIND_NAMES = ("prompt", "sampled", "observation", "masked")
"""TokenKind values 0..3 by name (agentrl.rollout.trajectory.TokenKind), as the page labels them."""


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and inf become None (browsers' JSON.parse rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class Run:
    def __init__(self, run_dir: str | Path, name: str | None = None) -> None:
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"run directory {self.dir} does not exist; pass the folder the trainer "
                                    "wrote (the one holding metrics.jsonl and trajectories/)")
        self.name = name or self.dir.resolve().name
        self.index = EpisodeIndex(self.dir)
        self._tokens: TokenText | None = None
        self._lock = threading.Lock()

    # -- run-level files -------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        path = self.dir / "config.yaml"
        if not path.is_file():
            return {"text": None, "data": None}
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception:  # shown as text when it does not parse
            data = None
        return {"text": text, "data": _clean(data)}

    def metrics(self) -> MetricSeries:
        return read_metrics(self.dir / "metrics.jsonl")

    def eval(self) -> dict[str, Any] | None:
        path = self.dir / "eval.json"
        if not path.is_file():
            return None
        try:
            return _clean(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    # -- episodes --------------------------------------------------------------------------------
    @property
    def tokens(self) -> TokenText:
        with self._lock:
            if self._tokens is None:
                self._tokens = TokenText.from_dir(self.dir / "tokenizer")
            return self._tokens

    def episode(self, step: int, index: int) -> dict[str, Any]:
        """One episode ready to draw: metadata plus parallel per-token arrays (text, kind, logprob...)."""
        return display_episode(self.index.read(step, index), self.tokens, step=step, index=index)


def display_episode(data: dict[str, Any], tokens: TokenText, *, step: int, index: int) -> dict[str, Any]:
    ids = [int(t) for t in data.get("token_ids", [])]
    n = len(ids)

    def per_token(name: str, default: Any, source: dict[str, Any] = data) -> list[Any]:
        values = source.get(name)
        if not isinstance(values, list) or len(values) != n:
            return [default] * n
        return values

    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    ratio = per_token("learner_ratio", None, info)
    meta_info = {k: v for k, v in info.items() if k != "learner_ratio"}
    return _clean({
        "step": step,
        "index": index,
        "reward": data.get("reward"),
        "stop_reason": data.get("stop_reason"),
        "num_turns": data.get("num_turns"),
        "turn_rewards": data.get("turn_rewards", []),
        "prompt_length": data.get("prompt_length"),
        "correct": data.get("correct"),
        "env_id": data.get("env_id", ""),
        "task_id": data.get("task_id", ""),
        "group_id": data.get("group_id"),
        "sample_id": data.get("sample_id"),
        "template_drift": data.get("template_drift", False),
        "tool_calls": data.get("tool_calls", []),
        "timings": data.get("timings", {}),
        "info": meta_info,
        "has_ratio": any(r is not None for r in ratio),
        "tokens": {
            "id": ids,
            "text": tokens.texts(ids),
            "kind": [int(k) for k in per_token("token_kinds", 0)],
            "logprob": per_token("behavior_logprobs", 0.0),
            "ratio": ratio,
            "turn": per_token("turn_ids", 0),
            "version": per_token("policy_version", -1),
        },
    })
