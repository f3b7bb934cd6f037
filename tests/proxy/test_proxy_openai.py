"""The proxy through the real ``openai`` client on loopback: recording, merging, splitting, isolation, errors.

Backends are real: the tiny model behind HFBackend (a spy subclass keeps what it sampled), or ScriptedBackend
where a test needs known text (tool calls) the untrained tiny model would not write.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import openai
import pytest

from agentrl.inference.scripted import ScriptedBackend
from agentrl.proxy import Proxy
from agentrl.rollout.packing import to_train_batch
from agentrl.rollout.trajectory import TokenKind, Trajectory

PYTHON_TOOL = {"type": "function", "function": {
    "name": "python", "description": "run code",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}
TAG_CALL = '<tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>'
FENCE_CALL = "Let me compute.\n```python\nprint(6 * 7)\n```"


def client(server, session: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url(session), api_key="unused", max_retries=0, timeout=60)


def record(server, session: str) -> tuple[dict, list[Trajectory]]:
    body = httpx.get(f"{server.url}/s/{session}/trajectory", timeout=10).json()
    return body, [Trajectory.from_dict(t) for t in body["samples"]]


def sampled_spans(traj: Trajectory) -> list[list[int]]:
    return [traj.token_ids[a:b] for kind, a, b in traj.spans() if kind == TokenKind.SAMPLED]


def scripted(tokenizer, turns: list[str]) -> ScriptedBackend:
    """Answers turns[k] on its k-th call (the last one after that)."""
    calls = itertools.count()

    def policy(prompt_ids: list[int]) -> str:
        return turns[min(next(calls), len(turns) - 1)]

    return ScriptedBackend(tokenizer, policy, logprob=-0.5)


# ---------------------------------------------------------------------------------------------------
# Token-in/token-out
# ---------------------------------------------------------------------------------------------------
def test_recorded_ids_are_what_the_backend_sampled(tiny, hf_backend, serve):
    _, tokenizer = tiny
    server = serve(Proxy(hf_backend, tokenizer))
    messages = [{"role": "user", "content": "Compute 12 + 30."}]
    responses = []
    for turn in range(2):
        r = client(server, "ep").chat.completions.create(
            model="any-name", messages=messages, max_tokens=24, seed=turn, logprobs=True,
            extra_body={"return_token_ids": True})
        responses.append(r)
        messages += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Go on."}]
    body, (traj,) = record(server, "ep")
    assert body["calls"] == 2 and body["splits"] == {}
    sampled = [c.token_ids for _, _, c in hf_backend.log]
    assert sampled_spans(traj) == sampled  # exactly the backend's ids, in order, in one sequence
    for r, ids, (prompt, _, completion) in zip(responses, sampled, hf_backend.log, strict=True):
        choice = r.choices[0]
        assert choice.model_extra["token_ids"] == ids
        assert r.model_extra["prompt_token_ids"] == prompt == traj.token_ids[:len(prompt)]
        body_ids = ids[:-1] if ids[-1] == tokenizer.eos_token_id else ids
        assert choice.message.content == tokenizer.decode(body_ids)  # the text decodes from the sampled ids
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(completion.logprobs)
    # the second prompt extends the first prompt + completion at the token level
    first_prompt, _, first = hf_backend.log[0]
    assert hf_backend.log[1][0][: len(first_prompt) + len(first.token_ids)] == first_prompt + first.token_ids


def test_logprobs_align_with_the_mask_and_pack(tiny, hf_backend, serve):
    _, tokenizer = tiny
    server = serve(Proxy(hf_backend, tokenizer))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 7 * 8."}]
    for _ in range(3):
        r = client(server, "ep").chat.completions.create(model="m", messages=messages, max_tokens=16)
        messages += [r.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": "x", "content": "Code execution result: 56\n"}]
    _, (traj,) = record(server, "ep")
    expected = [lp for _, _, c in hf_backend.log for lp in c.logprobs]
    in_loss = [lp for lp, m in zip(traj.behavior_logprobs, traj.loss_mask, strict=True) if m]
    assert in_loss == pytest.approx(expected)
    assert all(lp == 0.0 for lp, m in zip(traj.behavior_logprobs, traj.loss_mask, strict=True) if not m)
    assert [k == TokenKind.SAMPLED for k in traj.token_kinds] == [m == 1 for m in traj.loss_mask]
    assert traj.num_turns == 3 and traj.policy_versions == [0] * len(expected)
    batch = to_train_batch([traj])
    assert int(batch.loss_mask.sum()) == len(expected)
    assert batch.behavior_logprobs[0][batch.loss_mask[0].bool()].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("call", [TAG_CALL, FENCE_CALL], ids=["hermes", "fence"])
def test_two_call_tool_episode_merges_into_one_trajectory(tiny, serve, call):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, [call, "The answer is \\boxed{42}."]), tokenizer))
    c = client(server, "tool-ep")
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    first = c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "python"
    assert json.loads(tool_call.function.arguments) == {"code": "print(6 * 7)"}
    assert choice.message.content == ("Let me compute." if call == FENCE_CALL else None)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tool_call.id, "content": "Code execution result: 42\n"}]
    second = c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL])
    assert second.choices[0].message.content == "The answer is \\boxed{42}."
    assert second.choices[0].finish_reason == "stop"
    assert httpx.post(f"{server.url}/s/tool-ep/reward", json={"reward": 1.0}).status_code == 200
    body, (traj,) = record(server, "tool-ep")
    assert body["splits"] == {} and traj.num_turns == 2 and traj.reward == 1.0
    assert [c["status"] for c in traj.tool_calls] == ["ok"]
    # one sequence: the template's rendering of the conversation with the sampled turns as sampled
    template = [{"role": "user", "content": "What is 6 * 7?"}, {"role": "assistant", "content": call},
                {"role": "tool", "content": "Code execution result: 42\n"},
                {"role": "assistant", "content": "The answer is \\boxed{42}."}]
    rendered = tokenizer.apply_chat_template(template, tools=[PYTHON_TOOL], tokenize=False)
    assert tokenizer.decode(traj.token_ids) == rendered.rstrip("\n")
    obs = [traj.token_ids[a:b] for kind, a, b in traj.spans() if kind == TokenKind.OBSERVATION]
    assert len(obs) == 1 and "Code execution result: 42" in tokenizer.decode(obs[0])


# Qwen2.5's function-calling template as it behaves (written here from its documented output, not copied): tool
# schemas in the system turn, assistant tool_calls as <tool_call> JSON, consecutive tool results grouped in one
# user turn inside <tool_response> tags.
QWEN25_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}"
    "{%- endif %}{{- '\n\n# Tools\n\n<tools>' }}{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\n</tools>\n\nFor each function call, return a json object within <tool_call></tool_call> XML tags."
    "<|im_end|>\n' }}"
    "{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or "
    "(message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}{%- set call = call.function %}"
    "{{- '\n<tool_call>\n{\"name\": \"' + call.name + '\", \"arguments\": ' + (call.arguments | tojson) + '}\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def test_qwen_function_calling_template_with_parallel_calls_merges(tiny, serve):
    """Tools rendered in the prompt, two calls in one turn, their results grouped in one user turn: one sample."""
    import copy

    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = QWEN25_TOOLS_TEMPLATE
    calls = ('<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "python", "arguments": {"code": "print(6 + 7)"}}\n</tool_call>')
    server = serve(Proxy(scripted(tokenizer, [calls, "42 and 13"]), tokenizer))
    c = client(server, "qwen")
    example = [{"role": "user", "content": "1+1?"},  # a few-shot turn the proxy did not issue: rendered from structure
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "ex", "type": "function", "function": {"name": "python", "arguments": '{"code": "1+1"}'}}]},
               {"role": "tool", "tool_call_id": "ex", "content": "2"}, {"role": "assistant", "content": "2"}]
    messages = [*example, {"role": "user", "content": "6*7 and 6+7?"}]
    first = c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL])
    tool_calls = first.choices[0].message.tool_calls
    assert [json.loads(t.function.arguments)["code"] for t in tool_calls] == ["print(6 * 7)", "print(6 + 7)"]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": t.id, "content": out} for t, out in zip(tool_calls, ["42", "13"],
                                                                                           strict=True)]
    assert c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL]).choices[0].message.content
    body, (traj,) = record(server, "qwen")
    assert body["splits"] == {} and traj.num_turns == 2
    text = tokenizer.decode(traj.token_ids)
    assert '# Tools' in text and '"name": "python"' in text  # the schema reached the model
    assert '{"name": "python", "arguments": {"code": "1+1"}}' in text  # the few-shot call, from structure
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n13" in text
    assert sampled_spans(traj)[0][:-1] == tokenizer.encode(calls, add_special_tokens=False)


def test_malformed_tool_call_is_content_and_the_episode_goes_on(tiny, serve):
    _, tokenizer = tiny
    bad = '<tool_call>{"name": "python", "arguments": {"code": </tool_call>'
    server = serve(Proxy(scripted(tokenizer, [bad, "\\boxed{1}"]), tokenizer))
    c = client(server, "bad")
    messages = [{"role": "user", "content": "Go."}]
    r = c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL])
    assert r.choices[0].message.content == bad and r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    messages += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Fix it."}]
    assert c.chat.completions.create(model="m", messages=messages, tools=[PYTHON_TOOL]).choices[0].message.content
    body, (traj,) = record(server, "bad")
    assert body["malformed_tool_calls"] == 1 and body["splits"] == {}
    assert "not valid JSON" in body["call_records"][0]["malformed_tool_call"]
    assert [c["status"] for c in traj.tool_calls] == ["malformed"]
    # a call to a tool the request did not offer is malformed too
    other = serve(Proxy(scripted(tokenizer, [TAG_CALL.replace("python", "shell")]), tokenizer))
    r = client(other, "x").chat.completions.create(model="m", messages=messages[:1], tools=[PYTHON_TOOL])
    assert r.choices[0].message.tool_calls is None and "shell" in r.choices[0].message.content


# ---------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------
def test_edited_history_splits_into_samples_sharing_the_reward(tiny, serve):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, ["first answer", "second answer", "third answer"]), tokenizer))
    c = client(server, "edit")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    r = c.chat.completions.create(model="m", messages=messages)
    edited = [*messages, {"role": "assistant", "content": "first answer, edited"},
              {"role": "user", "content": "And?"}]
    c.chat.completions.create(model="m", messages=edited)
    compacted = [{"role": "system", "content": "Summary: said hi."}, {"role": "user", "content": "And?"}]
    c.chat.completions.create(model="m", messages=compacted)
    assert r.choices[0].message.content == "first answer"
    httpx.post(f"{server.url}/s/edit/reward", json={"reward": 0.5})
    body, trajs = record(server, "edit")
    assert len(trajs) == 3 and body["splits"] == {"response_edited": 1, "history_edited": 1}
    assert [t.info["split_reason"] for t in trajs] == [None, "response_edited", "history_edited"]
    assert all(t.reward == 0.5 and t.num_turns == 1 and t.trainable for t in trajs)
    # a new sample's prompt is all prompt: the edited turn is not trained as if the policy had sampled it
    assert trajs[1].token_kinds[: trajs[1].prompt_length] == [TokenKind.PROMPT] * trajs[1].prompt_length
    assert httpx.get(f"{server.url}/stats").json()["split/history_edited"] == 1


def test_interleaved_conversations_keep_one_sample_each(tiny, serve):
    """An agent with a sub-agent in one session: two samples, each extended by its own conversation's calls."""
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, ["one", "two"]), tokenizer))
    c = client(server, "sub")
    main_conv = [{"role": "user", "content": "Plan the task."}]
    sub_conv = [{"role": "system", "content": "You are a helper."}, {"role": "user", "content": "Sub-task."}]
    for _ in range(2):
        for conv in (main_conv, sub_conv):
            r = c.chat.completions.create(model="m", messages=conv)
            conv += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "next"}]
    body, trajs = record(server, "sub")
    assert len(trajs) == 2 and body["splits"] == {"history_edited": 1}
    assert [t.num_turns for t in trajs] == [2, 2]
    assert [c["sample"] for c in body["call_records"]] == [0, 1, 0, 1]


THINK_STRIPPING = (  # like Qwen3's: earlier assistant turns lose their <think> block
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1].lstrip() %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + c + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_template_that_rerenders_history_splits(tiny, serve):
    import copy

    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = THINK_STRIPPING
    server = serve(Proxy(scripted(tokenizer, ["<think>hmm</think>4", "done"]), tokenizer))
    c = client(server, "think")
    messages = [{"role": "user", "content": "2+2?"}]
    r = c.chat.completions.create(model="m", messages=messages)
    messages += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Sure?"}]
    c.chat.completions.create(model="m", messages=messages)
    body, trajs = record(server, "think")
    assert body["splits"] == {"template_rerendered": 1} and len(trajs) == 2
    # the second prompt is what the template renders (think stripped), not the sampled history
    assert "<think>" not in tokenizer.decode(trajs[1].token_ids[: trajs[1].prompt_length])


def test_changed_sampling_or_tools_split(tiny, serve):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, ["a", "b", "c"]), tokenizer))
    c = client(server, "s")
    messages = [{"role": "user", "content": "x"}]
    for kwargs in ({}, {"temperature": 0.5}, {"temperature": 0.5, "tools": [PYTHON_TOOL]}):
        r = c.chat.completions.create(model="m", messages=messages, **kwargs)
        messages += [r.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "y"}]
    body, trajs = record(server, "s")
    assert body["splits"] == {"sampling_changed": 1, "tools_changed": 1}
    assert [t.temperature for t in trajs] == [1.0, 0.5, 0.5]


# ---------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------
def test_concurrent_sessions_do_not_mix(tiny, hf_backend, serve):
    _, tokenizer = tiny
    server = serve(Proxy(hf_backend, tokenizer))
    n = 8

    async def episode(i: int) -> list[list[int]]:
        c = openai.AsyncOpenAI(base_url=server.base_url(f"ep-{i}"), api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": f"Task number {i}: compute {i} + {i}."}]
        got = []
        for turn in range(2):
            r = await c.chat.completions.create(model="m", messages=messages, max_tokens=12, seed=100 * i + turn,
                                                extra_body={"return_token_ids": True})
            got.append(r.choices[0].model_extra["token_ids"])
            messages += [r.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": "t", "content": f"result for {i}"}]
        await c.close()
        return got

    async def main() -> list[list[list[int]]]:
        return await asyncio.gather(*(episode(i) for i in range(n)))

    returned = asyncio.run(main())
    assert max(hf_backend.stats.batch_sizes) > 1  # the sessions' calls really were in flight together
    for i in range(n):
        body, (traj,) = record(server, f"ep-{i}")
        assert body["splits"] == {} and sampled_spans(traj) == returned[i]
        text = tokenizer.decode(traj.token_ids)
        assert f"Task number {i}:" in text and f"result for {i}" in text
        assert not any(f"Task number {j}:" in text for j in range(n) if j != i)


def test_completions_endpoint_serves_the_kits_openai_backend(tiny, hf_backend, serve):
    """The kit's own token-id client (OpenAICompletionsBackend) samples through the proxy: ids round-trip."""
    from agentrl.inference.base import SamplingParams
    from agentrl.inference.openai import OpenAICompletionsBackend

    _, tokenizer = tiny
    server = serve(Proxy(hf_backend, tokenizer))
    remote = OpenAICompletionsBackend(f"{server.url}/s/tok", model="m")
    prompt = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)

    async def two_calls():
        first = (await remote.generate(prompt, SamplingParams(max_new_tokens=10, seed=3)))[0]
        more = tokenizer.encode("\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
        second = (await remote.generate(prompt + first.token_ids + more, SamplingParams(max_new_tokens=10)))[0]
        await remote.aclose()
        return first, second

    first, second = asyncio.run(two_calls())
    assert [c.token_ids for _, _, c in hf_backend.log] == [first.token_ids, second.token_ids]
    assert first.logprobs == pytest.approx(hf_backend.log[0][2].logprobs)
    body, (traj,) = record(server, "tok")  # the token-id prompts extend each other: one sample
    assert body["splits"] == {} and sampled_spans(traj) == [first.token_ids, second.token_ids]
    assert traj.token_ids[: len(prompt)] == prompt


def test_streaming_carries_the_same_turn(tiny, serve):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, [FENCE_CALL]), tokenizer))
    stream = client(server, "st").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "6*7?"}], tools=[PYTHON_TOOL], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert content == "Let me compute." and finish == ["tool_calls"]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"code": "print(6 * 7)"}]
    assert chunks[-1].usage.completion_tokens == len(tokenizer.encode(FENCE_CALL, add_special_tokens=False)) + 1


def test_reward_callback_and_models(tiny, serve):
    _, tokenizer = tiny
    proxy = Proxy(scripted(tokenizer, ["\\boxed{7}"]), tokenizer, reward_fn=lambda s: float("7" in s.last_text))
    server = serve(proxy)
    c = client(server, "cb")
    assert [m.id for m in c.models.list()] == ["agentrl-policy"]
    c.chat.completions.create(model="m", messages=[{"role": "user", "content": "3+4"}])
    body, (traj,) = record(server, "cb")
    assert body["reward"] == 1.0 and traj.reward == 1.0


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, param", [
    ({"n": 2}, "n"),
    ({"temperature": 5}, "temperature"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [PYTHON_TOOL]}, "tool_choice"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
])
def test_bad_requests_get_openai_errors(tiny, serve, kwargs, param):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, ["ok"]), tokenizer))
    request = {"model": "m", "messages": [{"role": "user", "content": "x"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client(server, "bad").chat.completions.create(**request)
    error = err.value.body
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_other_errors_are_openai_shaped(tiny, serve):
    _, tokenizer = tiny
    server = serve(Proxy(scripted(tokenizer, ["ok"]), tokenizer, max_context_tokens=8))
    r = httpx.post(f"{server.url}/s/a/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{server.url}/s/a/v1/chat/completions", timeout=10,
                   json={"model": "m", "messages": [{"role": "user", "content": "a long prompt " * 5}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = httpx.get(f"{server.url}/s/never-opened/trajectory", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{server.url}/s/bad%20id/v1/models", timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.get(f"{server.url}/v1/nowhere", timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{server.url}/s/a/v1/completions", json={"model": "m", "prompt": ["a", "b"]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
