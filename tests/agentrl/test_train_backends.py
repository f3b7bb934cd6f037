"""Training through every rollout path: overlapped (async, partial) rollouts, LoRA adapters, and servers
(stand-ins for ``vllm serve``, standin_server.py), one of which dies and comes back mid-run."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from standin_server import Server, make_app
from test_train import SMALL, _metrics

from agentrl.config import load_config
from agentrl.rollout.trajectory import read_jsonl
from agentrl.train import main, task_seeds, train


def _args(tmp_path, sandbox_url, *extra):
    return [f"run.output_dir={tmp_path}", f"sandbox.url={sandbox_url}", *SMALL, "sft.steps=0", "eval.tasks=0",
            *extra]


def test_async_partial_run_records_versions_and_pipeline_metrics(tmp_path, sandbox_url):
    assert main(_args(tmp_path, sandbox_url, "run.steps=3", "run.async=true", "rollout.partial=true",
                      "rollout.max_staleness=2", "rollout.concurrency=8", "run.tasks_per_step=3")) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0 <= r["perf/generator_idle_share"] <= 1 and 0 <= r["perf/learner_idle_share"] <= 1
        assert r["rollout/staleness_max"] <= 2 and r["rollout/versions_per_episode"] >= 1
        lags = {int(k.rsplit("/", 1)[1]) for k in r if k.startswith("rollout/tokens_at_lag/")}
        assert lags and max(lags) <= 2
    for step in (1, 2):  # every sampled token carries the version that sampled it, within the bound
        for t in read_jsonl(run_dir / f"trajectories/step_{step:06d}.jsonl"):
            assert t.policy_versions and all(step - 2 <= v <= step for v in t.policy_versions)


def test_async_resume_continues_after_the_checkpoint(tmp_path, sandbox_url):
    common = ["run.async=true", "run.save_every=2", "run.tasks_per_step=2"]
    assert main(_args(tmp_path, sandbox_url, "run.steps=2", *common)) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    assert main(["--resume", str(run_dir), "run.steps=4"]) == 0
    assert [r["step"] for r in _metrics(run_dir)] == [0, 1, 2, 3]  # no step redone, none skipped
    config = load_config(None, _args(tmp_path, sandbox_url, *common))
    early = {str(s) for step in (0, 1) for s in task_seeds(config, step)}
    for step in (2, 3):  # the in-flight groups were lost, never replayed: no task of steps 0-1 comes back
        tasks = {t.task_id for t in read_jsonl(run_dir / f"trajectories/step_{step:06d}.jsonl")}
        assert tasks and not tasks & early


def test_lora_trains_adapters_and_the_backend_samples_with_them(tmp_path, sandbox_url):
    from safetensors.torch import load_file

    assert main(_args(tmp_path, sandbox_url, "run.steps=2", "model.lora.r=4", "learner.lr=1e-2", "learner.entropy_coef=0.5",
                      "run.save_every=1")) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    for t in read_jsonl(run_dir / "trajectories/step_000001.jsonl"):  # after one update, in fp32
        if t.num_sampled:  # the backend sampled with the learner's adapters: the ratio is 1
            assert all(abs(r - 1) < 1e-3 for r in t.info["learner_ratio"])
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(run_dir / "final") is not None  # final/: adapters merged
    adapter = load_file(run_dir / "checkpoints/step_000001/model/adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    # B starts at 0; the entropy bonus gives a gradient even where every reward is equal: it trained
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_servers_one_dies_and_comes_back_training_goes_on(tmp_path, sandbox_url, tiny):
    model, tok = tiny
    servers = [Server(make_app(model, tok)), Server(make_app(model, tok))]
    urls = [s.url for s in servers]
    config = load_config(None, _args(tmp_path, sandbox_url, "run.steps=6", "backend.kind=openai",
                                     f"backend.urls={json.dumps(urls)}", "backend.health_interval_s=0.2",
                                     f"backend.weights_dir={tmp_path / 'policy'}"))
    run_dir = tmp_path / "tiny-arithmetic"
    result: dict = {}
    trainer = threading.Thread(target=lambda: result.update(summary=asyncio.run(train(config))))
    trainer.start()
    try:
        _wait(lambda: (run_dir / "metrics.jsonl").exists() and len(_metrics(run_dir)) >= 1)
        port = int(urls[0].rsplit(":", 1)[1])
        servers[0].stop()  # dies mid-run
        _wait(lambda: len(_metrics(run_dir)) >= 3)
        servers[0] = Server(make_app(model, tok), port=port)  # comes back on the same address, old weights
        trainer.join(timeout=300)
    finally:
        for s in servers:
            s.stop()
    assert not trainer.is_alive() and "summary" in result
    assert [r["step"] for r in _metrics(run_dir)] == list(range(6))
    back = servers[0].app.state
    assert back.reloads and back.requests > 0  # re-admitted: the latest weights first, then requests
    assert servers[1].app.state.reloads[-1] == str((tmp_path / "policy" / "policy").resolve())
    # the surviving server holds the learner's final weights
    final = {k: v for k, v in model.state_dict().items()}
    learner_final = __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        run_dir / "final" / "model.safetensors")
    served = servers[1].app.state.backend.model.state_dict()
    assert max((served[k] - learner_final[k]).abs().max().item() for k in learner_final) < 1e-6
    assert max((final[k] - learner_final[k]).abs().max().item() for k in learner_final) > 0  # it did train


def _wait(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
