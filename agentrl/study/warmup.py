"""The study's starting policy: the default config's model after its SFT warm-up, built once and cached.

Every run of a study starts from the same weights, so the warm-up is computed once and kept under
``$AGENTRL_HOME/study/warmup/<preset>-<key>/`` (an ordinary HF checkpoint folder plus ``warmup.json``).
The key hashes everything that shapes those weights, read from :mod:`agentrl.config` at run time (model,
seed, the ``sft`` section, the env and the rollout limits the demonstrations are played with), the base
model's own fingerprint and the source of :mod:`agentrl.sft`, so a change of the defaults or of the warm-up
code builds a new folder instead of reusing a stale one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentrl.cache import agentrl_home

log = logging.getLogger(__name__)

WARMUP_VERSION = 2  # bump when this module changes what it writes
WARMUP_FILE = "warmup.json"


def warmup_key(config: Any) -> dict[str, Any]:
    """The inputs that shape the warmed-up weights (a TrainConfig's relevant parts), as plain data."""
    from agentrl.tiny import PRESETS, build_tiny

    mc = config.model
    if mc.path is None or mc.path in PRESETS:
        base = build_tiny(mc.path or mc.preset, seed=config.run.seed).name  # carries the tiny fingerprint
    else:
        base = str(mc.path)
    import agentrl.sft

    ro = config.rollout
    return {
        "version": WARMUP_VERSION,
        # the warm-up's code too: a change to how demonstrations are made or trained on rebuilds the cache
        "sft_code": hashlib.sha256(Path(agentrl.sft.__file__).read_bytes()).hexdigest()[:12],
        "base": base,
        "dtype": mc.dtype,
        "seed": config.run.seed,
        "sft": asdict(config.sft),
        "env": {"id": config.env.id, "kwargs": config.env.kwargs},
        "rollout": {"max_turns": ro.max_turns, "max_new_tokens": ro.max_new_tokens,
                    "max_context_tokens": ro.max_context_tokens, "tool_output_tokens": ro.tool_output_tokens,
                    "mask_void_turns": ro.mask_void_turns},
    }


def warmup_dir(config: Any, root: Path | None = None) -> Path:
    key = warmup_key(config)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = f"{config.model.path and Path(str(config.model.path)).name or config.model.preset}-{digest}"
    return (root or agentrl_home() / "study" / "warmup") / name


def ensure_warmup(config: Any, *, root: Path | None = None, progress: bool = False) -> Path:
    """The cached warm-up folder for ``config`` (a TrainConfig), building it first if it is missing.

    Needs a sandbox (the demonstrations are played through the real env): call inside
    ``agentrl.runtime.sandbox_for``. With ``sft.steps == 0`` the base model itself is the start.
    """
    target = warmup_dir(config, root)
    if (target / WARMUP_FILE).is_file():
        return target
    import torch

    from agentrl.runtime import load_model, make_env_factory
    from agentrl.sft import warm_up

    t0 = time.perf_counter()
    mc = config.model
    torch.manual_seed(config.run.seed)
    model, tokenizer = load_model(mc.path, preset=mc.preset, seed=config.run.seed, dtype=mc.dtype, device="cpu")
    summary: dict[str, Any] = {}
    if config.sft.steps > 0:  # the same warm-up as python -m agentrl.train
        env = make_env_factory(config.env.id, config.env.kwargs)
        summary = asyncio.run(warm_up(model, tokenizer, env, config.sft, config.rollout, seed=config.run.seed,
                                      progress=progress))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:  # a temporary sibling renamed when complete: a crash never leaves a half-written entry
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"key": warmup_key(config), **summary, "seconds": time.perf_counter() - t0}
        (tmp / WARMUP_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("warm-up cached at %s (%.0f s)", target, time.perf_counter() - t0)
    return target


def preset_start(preset: str, sft_steps: int | None = None) -> tuple[Path, list[str]]:
    """The cached start of a benchmark on ``preset`` (the default recipe's warm-up; ``sft_steps`` overrides its
    length, 0: the untrained model) and the overrides a run from it needs: an untrained model's turns are void
    (no call, no answer), and masked they would leave an RL step nothing to train. Call inside a sandbox block."""
    from agentrl.config import load_config

    warmup = [] if sft_steps is None else [f"sft.steps={sft_steps}"]
    start = ensure_warmup(load_config(None, [f"model.preset={preset}", *warmup]))
    return start, ["rollout.mask_void_turns=false"] if sft_steps == 0 else []
