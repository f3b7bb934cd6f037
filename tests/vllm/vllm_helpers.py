"""Helpers shared by the vLLM tests: the trainer's recomputation and a small calculator env."""

from __future__ import annotations

import re


def recompute(model, prompt, completion, **sampling):
    """The trainer's logprobs of ``completion`` after ``prompt`` (alp.logprobs, fp32, teacher-forced)."""
    import torch

    from alp.logprobs import sampling_logprobs

    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        lp = sampling_logprobs(model(ids).logits.float(), ids, **sampling)[0]
    return lp[len(prompt):]


class CalcEnv:
    """Question 'a*b'; \\boxed{} ends the episode; anything else is a void turn answered by a user nudge."""

    max_turns = 3

    async def areset(self, *, seed=None, options=None):
        self.a, self.b, self.turn = 10 + seed, 20 + seed, 0
        self.task = {"question": f"{self.a}*{self.b}", "answer": str(self.a * self.b)}
        return ({"role": "user", "content": f"What is {self.a}*{self.b}?"},), {}

    async def astep(self, action):
        self.turn += 1
        info = {"stop_reason": None, "is_tool_call": False, "is_answer": False, "void_turn": False,
                "tool_error": False, "tool_calls": [], "reward_breakdown": {}, "correct": None}
        if box := re.search(r"\\boxed\{(\d+)\}", action):
            info.update(is_answer=True, stop_reason="stop", correct=box.group(1) == self.task["answer"])
            return (), float(info["correct"]), True, False, info
        info["void_turn"] = True
        if self.turn >= self.max_turns:
            info["stop_reason"] = "max_turns"
            return (), 0.0, False, True, info
        return ({"role": "user", "content": "Use python or answer."},), 0.0, False, False, info

    async def aclose(self):
        pass
