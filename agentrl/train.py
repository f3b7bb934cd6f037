"""``python -m agentrl.train``: the training entry point.

The full RL loop (rollout manager + ALP learner) is not wired in yet. Until it is, this command runs the part
of the pipeline that exists end to end and says plainly what it did not do: it builds (or loads) the tiny
model and tokenizer, samples one multi-turn tool episode through the chat-token bridge with a real tool
result, and prints the trajectory with its masked spans. It never pretends to train.
"""

from __future__ import annotations

import argparse
import logging
import sys

NOT_BUILT = "RL training loop (rollout manager + ALP learner wiring, checkpoints, plots)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentrl.train",
        description="Train an LLM agent with RL. Not built yet: " + NOT_BUILT + ". Today the command runs "
        "the built pipeline: the tiny model and tokenizer, and one episode through the chat-token bridge.",
    )
    parser.add_argument("--model-preset", default="tiny", choices=["tiny", "small"],
                        help="tiny local model preset to build or load from $AGENTRL_HOME (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="seed for model init and sampling (default: 0)")
    parser.add_argument("--max-new-tokens", type=int, default=24,
                        help="tokens the model may sample per turn in the demo episode (default: 24)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from agentrl.bridge import ChatBridge, EpisodeTokens
    from agentrl.tiny import build_tiny, load_tiny

    print(f"[agentrl] model: building or loading tiny preset {args.model_preset!r} (seed {args.seed})")
    path = build_tiny(args.model_preset, seed=args.seed)
    model, tokenizer = load_tiny(args.model_preset, seed=args.seed)
    print(f"[agentrl] model: {path} ({sum(p.numel() for p in model.parameters()):,} parameters)")

    bridge = ChatBridge(tokenizer)
    episode = EpisodeTokens(bridge, [{"role": "user", "content": "What is 37 * 91?"}])
    torch.manual_seed(args.seed)
    for turn in range(2):
        prompt = torch.tensor([episode.token_ids])
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=True,
                                 output_scores=True, return_dict_in_generate=True,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        sampled = out.sequences[0, prompt.shape[1]:].tolist()
        logprobs = [torch.log_softmax(s[0], -1)[t].item() for s, t in zip(out.scores, sampled, strict=True)]
        episode.add_turn(sampled, logprobs, policy_version=0)
        if turn == 0:  # the untrained model writes no code; show how a tool result is appended, masked
            episode.add_observation([{"role": "tool", "content": f"Code execution result: {37 * 91}\n"}])
    traj = episode.to_trajectory(stop_reason="max_turns", env_id="demo")
    print(f"[agentrl] episode: {len(traj)} tokens, {traj.num_sampled} sampled (in the loss), "
          f"{traj.num_turns} turns, template drift: {traj.template_drift}")
    print(traj.render(tokenizer))
    print(f"[agentrl] NOT BUILT YET: {NOT_BUILT}. No training happened.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
