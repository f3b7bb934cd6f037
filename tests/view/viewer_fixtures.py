"""Builders for the run viewer tests: a realistic run directory, hostile text, a live server.

The run directory is what agentrl.train writes: the real tiny tokenizer, Trajectory records from the
real RolloutManager (scripted backend, small in-memory calculator envs), synthetic metrics.jsonl lines
with the trainer's prefixes (including gaps, NaN, inf and a torn last line), eval.json, and one step of
hostile model output built with the chat bridge.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from agentrl.rollout.bridge import ChatBridge, EpisodeTokens

# Debian's packages (chromium, chromium-driver); other systems point the environment variables elsewhere.
CHROMIUM = Path(os.environ.get("AGENTRL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AGENTRL_CHROMEDRIVER", "/usr/bin/chromedriver"))

HOSTILE = [
    "<script>alert(1)</script>",
    "</textarea><textarea>",
    '"><img src=x onerror=alert(1)>',
    "</script><script>alert(2)</script>",
    "<!-- {{7*7}} ${alert(3)} &amp; &lt;b&gt; \u2028 \u2029 -->",
    '<svg onload="window.__pwned=1"></svg><iframe srcdoc="<script>parent.__pwned=2</script>">',
]
HUGE_LINE = "A" * 100_000 + "<b>bold?</b>" + "z" * 100_000  # one 200k-character line
HOSTILE_STEP = 45
LOGGED_STEPS = (0, 10, 20, 30, 40)
NUM_METRIC_STEPS = 50


# ---- a small in-memory env, the pattern of tests/agentrl/test_rollout.py ----------------------------
class CalcEnv:
    """Question 'a*b'; a ```python print(a*b)``` block is 'run'; \\boxed{n} answers."""

    max_turns = 3

    def __init__(self, env_id: str = "calc-v0", max_turns: int = 3) -> None:
        self.spec = SimpleNamespace(id=env_id)
        self.max_turns = max_turns

    async def areset(self, *, seed=None, options=None):
        self.a, self.b = 10 + seed, 20 + seed
        self.task = {"question": f"{self.a}*{self.b}", "answer": str(self.a * self.b)}
        self.turn = 0
        return ({"role": "user", "content": f"What is {self.a}*{self.b}?"},), {}

    async def astep(self, action):
        self.turn += 1
        info = {"stop_reason": None, "is_tool_call": False, "is_answer": False, "void_turn": False,
                "tool_error": False, "tool_calls": [], "reward_breakdown": {}, "correct": None}
        box = re.search(r"\\boxed\{(\d+)\}", action)
        code = re.search(r"print\((\d+)\*(\d+)\)", action)
        if box:
            info.update(is_answer=True, stop_reason="stop", correct=box.group(1) == self.task["answer"])
            info["answer"] = box.group(1)
            return (), float(info["correct"]), True, False, info
        if code:
            info["is_tool_call"] = True
            info["tool_calls"] = [{"name": "python", "status": "Finished", "execution_time": 0.012 * self.turn,
                                   "truncated": False}]
            value = int(code.group(1)) * int(code.group(2))
            obs = ({"role": "tool", "content": f"Code execution result: {value}\n"},)
        else:
            info["void_turn"] = True
            obs = ({"role": "user", "content": "Use python or answer."},)
        if self.turn >= self.max_turns:
            info["stop_reason"] = "max_turns"
            return (), 0.0, False, True, info
        return obs, 0.0, False, False, info

    async def aclose(self):
        pass


def scripted_policy(tok, seed: int, void: float):
    """Mixed behaviour per turn: solve, answer wrong, or ramble (a void turn, masked)."""
    rng = random.Random(seed)

    def policy(prompt_ids):
        text = tok.decode(prompt_ids)
        result = re.findall(r"Code execution result: (\d+)", text)
        roll = rng.random()
        if roll < void:
            return "Let me think about it."  # void turn: masked out of the loss
        if result:
            value = int(result[-1]) + (0 if roll < 0.8 else 1)
            return f"The answer is \\boxed{{{value}}}."
        a, b = re.findall(r"What is (\d+)\*(\d+)", text)[0]
        return f"```python\nprint({a}*{b})\n```"

    return policy


def rollout_trajectories(tok, step: int):
    from agentrl.inference.scripted import ScriptedBackend
    from agentrl.rollout import RolloutConfig, RolloutManager

    out = []
    for env_id, seeds, void, turns in (("calc-v0", [step, step + 1], 0.15, 3), ("calc-hard-v0", [step + 7], 0.4, 2)):
        backend = ScriptedBackend(tok, scripted_policy(tok, step * 31 + len(env_id), void), logprob=-0.4)
        manager = RolloutManager(backend, tok, lambda env_id=env_id, turns=turns: CalcEnv(env_id, turns),
                                 RolloutConfig(n_samples=4, max_turns=3, max_new_tokens=64,
                                               max_context_tokens=1024, seed=step))
        out.extend(asyncio.run(manager.run(seeds)).trajectories)
    rng = random.Random(step)
    for i, t in enumerate(out):
        if i % 2 == 0:  # what the learner logs: its ratio per token, 1.0 off the loss mask
            t.info["learner_ratio"] = [round(math.exp(rng.gauss(0, 0.15)), 4) if m else 1.0 for m in t.loss_mask]
    return out


def hostile_trajectories(tok):
    """Model output and tool output that try to break out of the page's markup."""
    bridge = ChatBridge(tok, verify="never")
    eos = tok.eos_token_id
    out = []
    for i, text in enumerate([*HOSTILE, HUGE_LINE]):
        ep = EpisodeTokens(bridge, [{"role": "user", "content": f"Say something nasty {i}: {text[:60]}"}])
        sampled = tok.encode(text, add_special_tokens=False) + [eos]
        ep.add_turn(sampled, [-0.5] * len(sampled), policy_version=3)
        ep.add_observation([{"role": "tool", "content": text if len(text) < 1000 else text[:5000]}])
        masked = tok.encode(f"void {text[:40]}", add_special_tokens=False) + [eos]
        ep.add_turn(masked, [-1.0] * len(masked), policy_version=3)
        ep.mask_last_turn()
        out.append(ep.to_trajectory(
            reward=0.0, stop_reason="max_turns", turn_rewards=[0.0, 0.0],
            tool_calls=[{"name": text[:80], "status": "Failed", "execution_time": 1.5, "truncated": True}],
            timings={"generate_s": 0.1}, env_id="hostile-v0", task_id=text[:30],
            info={"task": text[:2000], "answer": "</script>", "note": text[:100]},
        ))
    return out


def write_metrics(path: Path, steps: int, seed: int = 0, scale: float = 1.0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for s in range(steps):
            p = 1 - math.exp(-s / 15)
            row = {
                "step": s, "time": 3.0 * s,
                "rollout/reward_mean": scale * (0.1 + 0.7 * p + rng.gauss(0, 0.03)),
                "rollout/accuracy": scale * (0.08 + 0.7 * p + rng.gauss(0, 0.03)),
                "rollout/turns_mean": 1.2 + 1.3 * p, "rollout/response_length_mean": 40 + 30 * p,
                "rollout/tool_call_rate": 0.1 + 0.9 * p,
                "ratio/mean": 1 + rng.gauss(0, 0.01), "ratio/max": 1.3 + rng.random(),
                "ratio/q01": 0.8 + rng.gauss(0, 0.02), "ratio/q50": 1.0, "ratio/q99": 1.2 + rng.gauss(0, 0.02),
                "kl/mean": 0.01 * p + rng.random() * 1e-3, "clip/low_frac": 0.02 * rng.random(),
                "clip/high_frac": 0.05 * rng.random(),
                **{f"sigma/layer_{k}": 0.01 * (k + 1) * (1 + 0.2 * p) for k in range(4)},
                "sigma/mean": 0.025 * (1 + 0.2 * p),
                "entropy": 1.5 - p, "grad_norm": 2.0 + rng.random(), "loss/total": 0.5 - 0.3 * p,
                "perf/step_s": 2.5 + rng.random(), "perf/tokens_per_s": 9000 + 500 * rng.random(),
            }
            if s % 10 == 0 or s == steps - 1:
                row["eval/accuracy"] = 0.05 + 0.75 * p
            if s == 7:
                row["grad_norm"] = float("nan")  # json.dumps writes NaN: a gap, not a crash
            if s == 8:
                row["ratio/max"] = float("inf")
            if s == 12:
                del row["kl/mean"]
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 99, "rollout/rew')  # a line torn by a crash mid-write


CONFIG_YAML = """\
seed: 0
model:
  name: tiny
  dtype: float32
rollout:
  n_samples: 4
  max_turns: 3
  temperature: 1.0
learner:
  loss_type: alp
  epsilon: 0.2
  epsilon_high: 0.28
  sigma_init: 0.01
env:
  id: calc-v0
note: "<script>alert('config')</script>"
"""


# ---- live server and browser ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, run_dirs) -> None:
        import uvicorn

        from agentrl.view.app import create_app

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        config = uvicorn.Config(create_app(run_dirs), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("viewer server did not start within 20 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no {CHROMIUM}: apt-get install -y chromium chromium-driver"
    if not CHROMEDRIVER.exists():
        return f"no {CHROMEDRIVER}: apt-get install -y chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is missing: pip install selenium"
    return None
