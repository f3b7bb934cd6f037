import json

import pytest

from agentrl.rollout.trajectory import TokenKind, Trajectory, TrajectoryError, read_jsonl, write_jsonl

P, S, OB, M = TokenKind.PROMPT, TokenKind.SAMPLED, TokenKind.OBSERVATION, TokenKind.MASKED


def make(**over):
    fields = dict(
        token_ids=[1, 2, 3, 4, 5, 6, 7],
        loss_mask=[0, 0, 1, 1, 0, 0, 1],
        behavior_logprobs=[0.0, 0.0, -0.5, -1.25, 0.0, 0.0, -0.125],
        turn_ids=[0, 0, 1, 1, 1, 1, 2],
        policy_version=[-1, -1, 3, 3, -1, -1, 4],
        token_kinds=[P, P, S, S, OB, OB, S],
        prompt_length=2,
        reward=1.0,
        stop_reason="stop",
        num_turns=2,
        tool_calls=[{"status": "Finished", "execution_time": 0.01}],
        timings={"generate_s": 0.5},
        group_id=7,
        env_id="agentrl/Arithmetic-v0",
        info={"answer": "ü"},
    )
    fields.update(over)
    return Trajectory(**fields)


def test_jsonl_round_trip(tmp_path):
    trajs = [make(), make(group_id=8, reward=0.0, stop_reason="max_turns")]
    path = tmp_path / "t.jsonl"
    assert write_jsonl(path, trajs) == 2
    back = read_jsonl(path)
    assert back == trajs
    assert json.loads(path.read_text().splitlines()[0])["info"]["answer"] == "ü"


def test_misaligned_arrays_rejected_with_names():
    with pytest.raises(TrajectoryError, match="token_ids has 7 entries but loss_mask has 6"):
        make(loss_mask=[0, 0, 1, 1, 0, 0])


def test_mask_must_match_kinds():
    with pytest.raises(TrajectoryError, match=r"loss_mask\[4\]=1 disagrees"):
        make(loss_mask=[0, 0, 1, 1, 1, 0, 1])


def test_masked_tokens_carry_no_logprob():
    with pytest.raises(TrajectoryError, match="behavior_logprobs"):
        make(behavior_logprobs=[0.0, -1.0, -0.5, -1.25, 0.0, 0.0, -0.125])


def test_bad_stop_reason_and_prompt_length():
    with pytest.raises(TrajectoryError, match="stop_reason"):
        make(stop_reason="done")
    with pytest.raises(TrajectoryError, match="prompt_length"):
        make(prompt_length=0)


def test_bad_jsonl_line_names_line(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [make()])
    with open(path, "a") as f:
        f.write('{"token_ids": [1]}\n')
    with pytest.raises(TrajectoryError, match=":2:"):
        read_jsonl(path)


def test_spans_and_render(tiny_tokenizer):
    t = make(token_kinds=[P, P, S, S, OB, OB, M], loss_mask=[0, 0, 1, 1, 0, 0, 0],
             behavior_logprobs=[0.0, 0.0, -0.5, -1.25, 0.0, 0.0, 0.0])
    assert [(k, a, b) for k, a, b in t.spans()] == [(P, 0, 2), (S, 2, 4), (OB, 4, 6), (M, 6, 7)]
    text = t.render(tiny_tokenizer)
    assert text.startswith("[PROMPT]") and "[SAMPLED]" in text and "[OBSERVATION]" in text
    assert text.endswith("[/MASKED]")
    assert t.num_sampled == 2 and t.response_length == 5


def test_excluded_is_a_field_and_decides_trainable():
    assert make().trainable and make().excluded is None
    masked = dict(loss_mask=[0] * 7, behavior_logprobs=[0.0] * 7, token_kinds=[P, P, M, M, OB, OB, M])
    out = make(**masked, excluded="tool_error", stop_reason="tool_error")
    assert not out.trainable
    assert not make(**masked).trainable  # nothing to train on, though not excluded
    with pytest.raises(TrajectoryError, match="excluded"):
        make(excluded="tool_error")  # an excluded episode keeps no token in the loss


def test_records_written_before_the_excluded_field_still_read(tmp_path):
    old = make(loss_mask=[0] * 7, behavior_logprobs=[0.0] * 7, token_kinds=[P, P, M, M, OB, OB, M],
               stop_reason="timeout").to_dict()
    for key in ("excluded", "temperature", "top_p", "top_k", "metrics"):
        old.pop(key)
    old["info"] = {"excluded": True, "answer": "1"}
    t = Trajectory.from_dict(old)
    assert t.excluded == "timeout" and t.info == {"answer": "1"} and not t.trainable


def test_packing_takes_trainable_rows_and_their_sampling_settings():
    from agentrl.rollout.packing import to_train_batch

    masked = dict(loss_mask=[0] * 7, behavior_logprobs=[0.0] * 7, token_kinds=[P, P, M, M, OB, OB, M])
    trajs = [make(temperature=0.7, top_k=5, group_id=1), make(temperature=0.7, top_k=5, group_id=2, reward=0.0),
             make(**masked, excluded="error", stop_reason="error")]
    batch = to_train_batch(trajs)
    assert len(batch) == 2 and (batch.temperature, batch.top_p, batch.top_k) == (0.7, 1.0, 5)
    assert batch.rewards.tolist() == [1.0, 0.0] and batch.group_ids.tolist() == [0, 1]
    assert to_train_batch(trajs[2:]) is None
    with pytest.raises(ValueError, match="different settings"):
        to_train_batch([make(temperature=0.7), make(temperature=1.0)])
