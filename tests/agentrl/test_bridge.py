import pytest

from agentrl.rollout.bridge import ChatBridge, EpisodeTokens, TemplateDriftError
from agentrl.rollout.trajectory import TokenKind

SYSTEM = {"role": "system", "content": "Solve it. Run python in ```python blocks."}
USER = {"role": "user", "content": "What is 1234 * 5678? (ünïcode ✓)"}
TURNS = [
    ("```python\nprint(1234 * 5678)\n```", ({"role": "tool", "content": "Code execution result: 7006652\n"},)),
    ("Let me check.\n```python\nprint(7006652 / 5678)\n```",
     ({"role": "tool", "content": "Code execution result: 1234.0\n"}, {"role": "user", "content": "Go on."})),
    ("The answer is \\boxed{7006652}.", None),
]


def run_episode(bridge, turns=TURNS, sample=None):
    """Feed sampled ids turn by turn; returns (episode, every sampled id list in order)."""
    tok = bridge.tokenizer
    sample = sample or (lambda text: tok.encode(text, add_special_tokens=False) + [tok.eos_token_id])
    ep = EpisodeTokens(bridge, [SYSTEM, USER])
    sampled_all = []
    for text, observation in turns:
        ids = sample(text)
        sampled_all.append(ids)
        assert ep.add_turn(ids, [-0.5] * len(ids), policy_version=2) == text
        if observation is not None:
            ep.add_observation(observation)
    return ep, sampled_all


@pytest.fixture(params=["tiny", "qwen"])
def tokenizer(request, tiny_tokenizer):
    return tiny_tokenizer if request.param == "tiny" else request.getfixturevalue("qwen_tokenizer")


def test_concatenation_equals_template_rendering(tokenizer):
    bridge = ChatBridge(tokenizer, on_drift="error")
    assert bridge.incremental
    ep, sampled = run_episode(bridge)
    messages = ep.messages
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    # the last turn ended on eos; the template would only add its closing "\n"
    assert tokenizer.decode(ep.token_ids) + "\n" == rendered
    # token level too: canonical sampling gives exactly the ids the template's rendering encodes to
    assert ep.token_ids == tokenizer.encode(rendered, add_special_tokens=False)[:-1]
    traj = ep.to_trajectory(reward=1.0, stop_reason="stop")
    assert not traj.template_drift and traj.num_turns == 3


def test_masks_exactly_over_sampled_spans(tokenizer):
    ep, sampled = run_episode(ChatBridge(tokenizer))
    traj = ep.to_trajectory()
    spans = [(a, b) for kind, a, b in traj.spans() if kind == TokenKind.SAMPLED]
    assert [traj.token_ids[a:b] for a, b in spans] == sampled
    assert sum(traj.loss_mask) == sum(map(len, sampled))
    assert all(lp == -0.5 for lp, m in zip(traj.behavior_logprobs, traj.loss_mask, strict=True) if m)
    assert traj.loss_mask[: traj.prompt_length] == [0] * traj.prompt_length
    assert sorted(set(traj.turn_ids)) == [0, 1, 2, 3]
    assert {v for v, m in zip(traj.policy_version, traj.loss_mask, strict=True) if m} == {2}


def test_sampled_ids_never_reencoded(tiny_tokenizer):
    """A non-canonical split (one byte token per character) survives verbatim."""
    tok = tiny_tokenizer

    def per_char(text):
        return [i for ch in text for i in tok.encode(ch, add_special_tokens=False)] + [tok.eos_token_id]

    bridge = ChatBridge(tok, on_drift="error")
    ep, sampled = run_episode(bridge, sample=per_char)
    canonical = tok.encode(TURNS[0][0], add_special_tokens=False)
    assert sampled[0][:-1] != canonical  # really a different tokenization
    start = ep.prompt_length
    assert ep.token_ids[start:start + len(sampled[0])] == sampled[0]
    assert ep.to_trajectory().template_drift is False  # same text, so no drift


def test_incremental_and_full_paths_agree(tokenizer):
    fast, _ = run_episode(ChatBridge(tokenizer))
    slow_bridge = ChatBridge(tokenizer)
    slow_bridge.incremental = False
    slow, _ = run_episode(slow_bridge)
    assert fast.token_ids == slow.token_ids and fast.token_kinds == slow.token_kinds


def test_length_cut_turn_gets_closed_by_masked_template_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    bridge = ChatBridge(tok, on_drift="error")
    ep = EpisodeTokens(bridge, [USER])
    cut = tok.encode("```python\nprint(12", add_special_tokens=False)  # no eos: max_new_tokens hit
    ep.add_turn(cut, [-1.0] * len(cut), policy_version=0)
    added = ep.add_observation([{"role": "tool", "content": "SyntaxError"}])
    assert added[0] == tok.eos_token_id  # the template's <|im_end|>, not sampled, so masked
    assert ep.verify()


def test_mask_last_turn_for_void_turns(tiny_tokenizer):
    bridge = ChatBridge(tiny_tokenizer)
    ep = EpisodeTokens(bridge, [USER])
    ids = tiny_tokenizer.encode("hmm", add_special_tokens=False) + [tiny_tokenizer.eos_token_id]
    ep.add_turn(ids, [-0.1] * len(ids), policy_version=0)
    ep.mask_last_turn()
    traj = ep.to_trajectory(stop_reason="max_turns")
    assert traj.num_sampled == 0
    assert traj.token_kinds[-len(ids):] == [TokenKind.MASKED] * len(ids)


THINK_STRIPPING = (  # like Qwen3's: earlier assistant turns lose their <think> block
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1].lstrip() %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + c + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_drift_detected_on_history_rewriting_template(tiny_tokenizer):
    tok = tiny_tokenizer
    original = tok.chat_template
    tok.chat_template = THINK_STRIPPING
    try:
        turns = [("<think>multiply</think>```python\nprint(2*3)\n```",
                  ({"role": "tool", "content": "Code execution result: 6\n"},)),
                 ("\\boxed{6}", None)]
        strict = ChatBridge(tok, verify="turn", on_drift="error")
        with pytest.raises(TemplateDriftError, match="differ"):
            run_episode(strict, turns)
        lenient = ChatBridge(tok, on_drift="keep")
        ep, sampled = run_episode(lenient, turns)
        traj = ep.to_trajectory()
        assert traj.template_drift and lenient.drift_count == 1
        # the fallback keeps exactly what the model conditioned on
        assert traj.token_ids[traj.prompt_length:traj.prompt_length + len(sampled[0])] == sampled[0]
    finally:
        tok.chat_template = original


def test_no_template_is_a_clear_error(tiny_tokenizer):
    import copy

    tok = copy.copy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        ChatBridge(tok)


def test_bad_calls_are_errors(tiny_tokenizer):
    ep = EpisodeTokens(ChatBridge(tiny_tokenizer), [USER])
    with pytest.raises(RuntimeError, match="needs a sampled assistant turn"):
        ep.add_observation([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="logprobs"):
        ep.add_turn([1, 2], [0.0], policy_version=0)
