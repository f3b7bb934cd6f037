"""The training entry point end to end on the tiny model with the real sandbox (small budgets)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from agentrl.train import main

SMALL = [
    "run.tasks_per_step=2", "rollout.n_samples=2", "rollout.max_turns=2", "rollout.max_new_tokens=24",
    "rollout.max_context_tokens=256", "sft.steps=3", "sft.demos=4", "sft.batch_size=4", "eval.tasks=4",
    "eval.samples=1", "run.progress=false", "run.log_trajectories=2", "rollout.mask_void_turns=false",
    "sft.copy_steps=2",
]


def _args(tmp_path, sandbox_url, *extra):
    args = [f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", *SMALL, *extra]
    return args


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_writes_the_run_directory(tmp_path, sandbox_url):
    assert main(_args(tmp_path, sandbox_url, "run.steps=2", "run.save_every=1", "run.keep_last=1",
                      "sft.copy_steps=2")) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    for name in ("config.yaml", "metrics.jsonl", "eval.json", "samples.txt", "tokenizer", "final", "sft",
                 "trajectories/step_000000.jsonl", "plots/reward_accuracy.png", "plots/ratio.png",
                 "plots/sigma.png"):
        assert (run_dir / name).exists(), name
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1]
    for row in rows:
        for key in ("rollout/reward_mean", "ratio/mean", "ratio/q99", "kl/mu_pi_k3", "sigma/mean", "grad_norm"):
            assert math.isfinite(row[key]), key
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_000001"]  # keep_last=1
    evals = json.loads((run_dir / "eval.json").read_text())
    assert {"base", "before", "after"} <= set(evals) and "eval/pass@1" in evals["after"]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(run_dir / "final") is not None
    from agentrl.rollout.trajectory import read_jsonl

    logged = read_jsonl(run_dir / "trajectories/step_000000.jsonl")
    assert logged
    for t in logged:  # on-policy and fp32 on both sides: the learner's ratio to the rollout is 1
        if t.num_sampled:
            assert len(t.info["learner_ratio"]) == len(t)
            assert all(abs(r - 1) < 1e-3 for r in t.info["learner_ratio"])


def test_resume_gives_the_same_weights_and_metrics(tmp_path, sandbox_url):
    straight = tmp_path / "straight"
    split = tmp_path / "split"
    common = ["run.save_every=2", "eval.tasks=0"]
    assert main(_args(straight, sandbox_url, "run.steps=4", *common)) == 0
    assert main(_args(split, sandbox_url, "run.steps=2", *common)) == 0
    assert main(["--resume", str(split / "tiny-arithmetic"), "run.steps=4"]) == 0
    a = _metrics(straight / "tiny-arithmetic")
    b = _metrics(split / "tiny-arithmetic")
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for key in ("rollout/reward_mean", "rollout/sampled_tokens", "loss/policy", "ratio/mean", "sigma/mean"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)
    from safetensors.torch import load_file

    wa = load_file(straight / "tiny-arithmetic/final/model.safetensors")
    wb = load_file(split / "tiny-arithmetic/final/model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_sigint_checkpoints_and_exits_cleanly(tmp_path, sandbox_url):
    cmd = [sys.executable, "-m", "agentrl.train", *_args(tmp_path, sandbox_url, "run.steps=50", "run.save_every=0",
                                                          "eval.tasks=0")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run_dir = tmp_path / "tiny-arithmetic"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until at least one RL step is logged
        if (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").read_text().strip():
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("no training step within 240 s: " + (proc.stdout.read() if proc.stdout else ""))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert checkpoints, out
    last_logged = _metrics(run_dir)[-1]["step"]
    assert checkpoints[-1].name == f"step_{last_logged:06d}"
    state = torch.load(checkpoints[-1] / "state.pt", weights_only=False)
    assert state["step"] == last_logged


def test_off_policy_mode_trains_and_reports_staleness(tmp_path, sandbox_url):
    assert main(_args(tmp_path, sandbox_url, "run.steps=2", "run.async=true", "rollout.max_staleness=1", "eval.tasks=0",
                      "rollout.concurrency=8")) == 0
    rows = _metrics(tmp_path / "tiny-arithmetic")
    assert [r["step"] for r in rows] == [0, 1]
    assert all("rollout/stale_rejected" in r and math.isfinite(r["ratio/mean"]) for r in rows)


def test_resuming_a_finished_run_does_no_work(tmp_path, sandbox_url, caplog):
    assert main(_args(tmp_path, sandbox_url, "run.steps=2", "eval.tasks=0")) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    before = (run_dir / "metrics.jsonl").read_text()
    final = (run_dir / "final" / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="agentrl.train"):
        assert main(["--resume", str(run_dir)]) == 0
    assert "is finished" in caplog.text and "run.steps=" in caplog.text
    assert (run_dir / "metrics.jsonl").read_text() == before  # no step redone, no line appended
    assert (run_dir / "final" / "model.safetensors").stat().st_mtime_ns == final


def _train_in_thread(args):
    import asyncio
    import threading

    from agentrl.config import load_config
    from agentrl.train import train

    result: dict = {}

    def run():
        try:
            result["summary"] = asyncio.run(train(load_config(None, args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _wait_for_steps(run_dir, n, timeout=240):
    deadline = time.time() + timeout
    while not ((run_dir / "metrics.jsonl").exists() and len(_metrics(run_dir)) >= n):
        assert time.time() < deadline, f"fewer than {n} steps within {timeout} s"
        time.sleep(0.2)


def _sandbox_scored_env() -> str:
    """Arithmetic scored through the sandbox (as code envs run their tests there): every episode needs it,
    whatever the barely trained policy writes, so an outage shows in every step."""
    import envs
    from envs.arithmetic_env import ArithmeticEnv

    class SandboxScoredArithmetic(ArithmeticEnv):
        async def ascore(self, task, answer, action):
            await self.sandbox_client().run_code("print(1)")
            return await super().ascore(task, answer, action)

    env_id = "tests/SandboxScoredArithmetic-v0"
    envs.register(env_id, entry_point=SandboxScoredArithmetic, override=True)
    return f"env.id={env_id}"


def test_a_sandbox_outage_pauses_training_and_the_lost_step_is_redone(tmp_path, caplog):
    from tools.embedded import EmbeddedSandbox, free_port

    port = free_port()
    sandbox = EmbeddedSandbox(port=port).start()
    run_dir = tmp_path / "tiny-arithmetic"
    with caplog.at_level("WARNING"):
        thread, result = _train_in_thread(_args(tmp_path, sandbox.url, "run.steps=5", "eval.tasks=0",
                                                "sft.steps=0", "sandbox.outage_timeout_s=120",
                                                _sandbox_scored_env()))
        try:
            _wait_for_steps(run_dir, 1)
            sandbox.stop()  # the sandbox dies mid-run...
            time.sleep(6)
            sandbox = EmbeddedSandbox(port=port).start()  # ...and comes back on the same address
            thread.join(timeout=300)
        finally:
            sandbox.stop()
    assert "summary" in result, result
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # every step counted once, none lost
    for r in rows:  # no step trained on (or reported) the episodes the outage destroyed
        assert r.get("rollout/stop/tool_error", 0) < r["rollout/episodes"] / 2, r["step"]
    assert "pausing rollouts" in caplog.text and "is back" in caplog.text


def test_a_sandbox_that_stays_down_checkpoints_and_exits_with_an_error(tmp_path, capsys):
    from tools.embedded import EmbeddedSandbox

    sandbox = EmbeddedSandbox().start()
    run_dir = tmp_path / "tiny-arithmetic"
    thread, result = _train_in_thread(_args(tmp_path, sandbox.url, "run.steps=20", "eval.tasks=0", "sft.steps=0",
                                            "run.save_every=0", "sandbox.outage_timeout_s=3", _sandbox_scored_env()))
    try:
        _wait_for_steps(run_dir, 2)
    finally:
        sandbox.stop()
    thread.join(timeout=300)
    from agentrl.runtime import SandboxOutage

    assert isinstance(result.get("error"), SandboxOutage) and "did not answer /health" in str(result["error"])
    last = _metrics(run_dir)[-1]["step"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir())[-1] == f"step_{last:06d}"


def test_training_reaches_a_token_protected_sandbox_with_sandbox_token(tmp_path):
    # The bug: sandbox.token never reached the envs' clients, so every tool call to a protected sandbox failed.
    # The SFT warm-up's demonstrations call the tool (a scripted solver through the real env and sandbox).
    from tools.embedded import EmbeddedSandbox

    common = ["run.steps=1", "eval.tasks=0", "sft.steps=2", "sft.demos=4", "sft.copy_steps=0"]
    with EmbeddedSandbox(token="s3cret") as sandbox:
        assert main(_args(tmp_path / "with", sandbox.url, *common, "sandbox.token=s3cret")) == 0
        with pytest.raises(RuntimeError, match="no correct demonstration.*tool_error"):
            main(_args(tmp_path / "without", sandbox.url, *common))
    assert (tmp_path / "with" / "tiny-arithmetic" / "sft").is_dir()


def test_sandbox_pool_from_sandbox_urls(tmp_path, sandbox_url):
    from agentrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="not both"):
        load_config(None, [f"sandbox.url={sandbox_url}", f"sandbox.urls=[{sandbox_url}]"])
    from tools.embedded import EmbeddedSandbox

    with EmbeddedSandbox() as second:
        args = [a for a in _args(tmp_path, sandbox_url, "run.steps=1", "eval.tasks=0", "sft.steps=0")
                if not a.startswith("sandbox.url=")]
        assert main([*args, f"sandbox.urls=[{sandbox_url}, {second.url}]"]) == 0
    row = _metrics(tmp_path / "tiny-arithmetic")[0]
    assert row.get("rollout/stop/tool_error", 0) == 0
