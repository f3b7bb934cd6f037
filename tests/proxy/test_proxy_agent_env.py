"""Agent functions as RolloutManager episodes (agentrl.proxy.AgentEnv), and the example agent end to end.

The example agent runs its python tool in the real sandbox (the ``sandbox`` fixture). Where a test needs an
agent that solves its task, the policy is agentrl.sft's scripted solver behind ScriptedBackend (a real
backend answering known text); the untrained tiny model is used where only the plumbing matters.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from agentrl.inference.scripted import ScriptedBackend
from agentrl.proxy.agent_env import AgentEnv, load_agent
from agentrl.rollout import RolloutConfig, RolloutManager, to_train_batch
from agentrl.runtime import make_env_factory
from agentrl.sft import solver_policy

TASKS = {"tasks": "agentrl/Arithmetic-v0", "digits": [1, 2], "system_prompt": ""}
CONFIG = RolloutConfig(n_samples=2, max_turns=3, max_new_tokens=48, max_context_tokens=512, concurrency=8,
                       episode_timeout_s=60)


def solver_backend(tokenizer, seeds):
    """The SFT demonstrations' scripted solver: python for the question's expression, then the boxed result."""
    import envs

    expressions = {}
    for seed in seeds:
        env = envs.make(TASKS["tasks"], digits=TASKS["digits"], system_prompt="")
        _, info = env.reset(seed=seed)
        expressions[info["task"]["question"]] = info["task"]["metadata"]["expression"]
    return ScriptedBackend(tokenizer, solver_policy(tokenizer, expressions), logprob=-0.25)


def test_make_env_factory_recognises_agent_functions(examples_importable):
    factory = make_env_factory("examples.openai_agent.agent:solve", {"digits": [1, 2]})
    assert isinstance(factory, AgentEnv) and factory.agent_id == "examples.openai_agent.agent:solve"
    env = factory()  # calling it gives the task env, for code that needs a plain env (SFT demonstrations)
    assert env.spec.id == "agentrl/Arithmetic-v0"
    factory.close()
    assert load_agent("envs.arithmetic_env:ArithmeticEnv") is None  # a class is an env, not an agent
    assert load_agent("agentrl/Arithmetic-v0") is None
    assert load_agent("examples.openai_agent.agent:missing") is None
    with pytest.raises(Exception, match="no attribute"):  # and envs.make says what is wrong
        make_env_factory("examples.openai_agent.agent:missing")


def test_example_agent_trains_through_the_proxy(tiny, sandbox, examples_importable):
    """The OpenAI-client agent, its python tool in the sandbox, as RolloutManager episodes: one trainable
    trajectory per episode, the tool call merged into it, scored by the task env's verifier."""
    _, tokenizer = tiny
    factory = make_env_factory("examples.openai_agent.agent:solve", {"digits": [1, 2], "system_prompt": ""})
    seeds = [11, 12, 13]
    manager = RolloutManager(solver_backend(tokenizer, seeds), tokenizer, factory, CONFIG)
    try:
        batch = asyncio.run(manager.run(seeds))
    finally:
        factory.close()
    trajs = batch.trajectories
    assert len(trajs) == 6 and [(t.group_id, t.sample_id) for t in trajs] == [(g, i) for g in range(3) for i in range(2)]
    for t in trajs:
        assert t.trainable and t.stop_reason == "stop" and t.correct and t.reward == 1.0, t.info
        assert t.num_turns == 2 and [c["name"] for c in t.tool_calls] == ["python"]
        assert "Code execution result:" in tokenizer.decode(t.token_ids)  # the sandbox's answer, masked
        assert t.metrics == {"proxy_calls": 2.0, "proxy_splits": 0.0, "malformed_tool_calls": 0.0}
        assert (t.temperature, t.top_p, t.top_k) == (CONFIG.temperature, CONFIG.top_p, CONFIG.top_k)
    assert batch.metrics["rollout/accuracy"] == 1.0 and batch.metrics["rollout/tool_call_rate"] == 1.0
    train = to_train_batch(trajs)
    assert train is not None and train.token_ids.shape[0] == 6


def test_agent_failures_are_excluded_and_results_scored(tiny, hf_backend):
    _, tokenizer = tiny

    def raises(base_url, task):
        openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=task["messages"], max_tokens=4)
        raise RuntimeError("the agent's own bug")

    async def returns_reward(base_url, task):
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        r = await client.chat.completions.create(model="m", messages=task["messages"], temperature=0.1, seed=5)
        await client.close()
        assert r.choices[0].message.content is not None
        return 0.25

    def hangs(base_url, task):
        openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=task["messages"], max_tokens=4)
        import time

        time.sleep(4)

    def never_calls(base_url, task):
        return "\\boxed{1}"

    def loops(base_url, task):
        c = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        messages = list(task["messages"])
        while True:  # never stops by itself: the proxy refuses call max_turns + 1, and the client raises
            r = c.chat.completions.create(model="m", messages=messages, max_tokens=4)
            messages += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "more"}]

    results = {}
    for agent in (raises, returns_reward, hangs, never_calls, loops):
        factory = AgentEnv(agent, **TASKS)
        cfg = RolloutConfig(**{**CONFIG.__dict__, "episode_timeout_s": 1.0 if agent is hangs else 60.0})
        try:
            results[agent.__name__] = asyncio.run(RolloutManager(hf_backend, tokenizer, factory, cfg).run([1]))
        finally:
            factory.close()
    for name, reason in (("raises", "error"), ("hangs", "timeout"), ("never_calls", "error")):
        for t in results[name].trajectories:
            assert t.stop_reason == reason and t.excluded == reason and not t.trainable, name
    assert "the agent's own bug" in results["raises"].trajectories[0].info["error"]
    for t in results["loops"].trajectories:  # the episode's limit, not a fault: it trains
        assert t.stop_reason == "max_turns" and t.trainable and t.num_turns == cfg.max_turns
    rewarded = results["returns_reward"].trajectories
    assert [t.reward for t in rewarded] == [0.25, 0.25] and all(t.trainable for t in rewarded)
    # the rollout config's sampling settings are imposed; the agent's temperature and seed are recorded only
    assert all(t.temperature == 1.0 for t in rewarded)
    assert rewarded[0].token_ids != rewarded[1].token_ids  # each group member has its own seed


def test_train_cli_runs_an_agent_function(tmp_path, sandbox, examples_importable):
    """`python -m agentrl.train env.id=examples.openai_agent.agent:solve sft.steps=0 ...` end to end."""
    from agentrl.train import main

    args = [f"run.output_dir={tmp_path}", "env.id=examples.openai_agent.agent:solve", "sft.steps=0",
            "run.steps=1", "run.tasks_per_step=2", "rollout.n_samples=2", "rollout.max_new_tokens=16",
            "rollout.max_context_tokens=512", "eval.tasks=2", "run.progress=false", "run.log_trajectories=2"]
    assert main(args) == 0
    run_dir = tmp_path / "tiny-arithmetic"
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert row["rollout/episodes"] >= 4 and row["rollout/env/proxy_calls"] >= 1
    assert "grad_norm" in row  # the learner took its step on the agent's trajectories
