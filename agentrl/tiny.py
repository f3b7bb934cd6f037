"""Tiny local models: a byte-level BPE tokenizer and a Qwen2-style causal LM built without any download.

Everything the default CPU run and the test suite train is made here, deterministically, and saved as an
ordinary Hugging Face checkpoint folder, so the code that loads it (``from_pretrained``) is the very code
that loads a real model id or a local folder:

    model, tokenizer = load_tiny("tiny")        # builds on first call, then reads the cache
    path = build_tiny("small", seed=0)          # the folder, for from_pretrained or a config's model.path

Same preset and seed -> the same files, byte for byte (tested). The cache lives under
``$AGENTRL_HOME/models`` (see :mod:`agentrl.cache`); a folder's name carries a fingerprint of everything
that shapes its bytes, so a change of corpus or preset builds a new folder instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentrl.cache import agentrl_home

if TYPE_CHECKING:  # torch and transformers load lazily: importing agentrl stays cheap
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # also the eos token: an assistant turn ends by sampling it
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, TOOL_CALL_OPEN, TOOL_CALL_CLOSE]

# ChatML, the format Qwen2.5 uses, reduced to plain role/content messages (roles: system, user,
# assistant, tool). Each message renders independently of the others, which the chat-token bridge relies
# on for its incremental path (and checks). Given ``tools`` (OpenAI function schemas), the system turn
# lists them the way Qwen2.5's template does (<tools> JSON lines, then the <tool_call> format); without
# tools the rendering is the plain ChatML one, byte for byte.
TOOLS_SYSTEM_TEMPLATE = (
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n' }}"
)
CHATML_TEMPLATE = (
    "{%- if tools %}" + TOOLS_SYSTEM_TEMPLATE + "{%- endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOKENIZER_VOCAB_SIZE = 2048  # upper bound; the built-in corpus yields ~570 (digits are single tokens)
CORPUS_SEED = 1234
CORPUS_VERSION = 2  # bump when the corpus generator changes: it is part of the cache fingerprint


def tool_demo_messages(rng: random.Random) -> list[dict[str, str]]:
    """One synthetic tool-use conversation: question, fenced python call, tool output, boxed answer."""
    a, b = rng.randint(10, 9999), rng.randint(10, 999)
    op, value = rng.choice([("*", a * b), ("+", a + b), ("-", a - b), ("%", a % b), ("//", a // b)])
    return [
        {"role": "system", "content": "Solve the problem. You may run python in ```python blocks."},
        {"role": "user", "content": f"What is {a} {op} {b}?"},
        {"role": "assistant", "content": f"```python\nprint({a} {op} {b})\n```"},
        {"role": "tool", "content": f"Code execution result: {value}\n"},
        {"role": "assistant", "content": f"The answer is \\boxed{{{value}}}."},
    ]


def _render_chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def builtin_corpus(n_lines: int = 3000, seed: int = CORPUS_SEED) -> list[str]:
    """A small deterministic corpus: math prose, python snippets and the tool-call format."""
    rng = random.Random(seed)
    words = (
        "the answer is number sum product total each of and a an we find compute solve let then so "
        "therefore first second result value equation integer remainder divided by times plus minus "
        "how many what is if there are has more than less half twice of per every costs dollars"
    ).split()
    instructions = [
        "You can run Python: write code in a ```python block and its output comes back as "
        '"Code execution result: ...". Give the final answer within \\boxed{}.',
        "Solve the problem step by step. Put your final answer within \\boxed{}.",
        "Your last message had neither a tool call nor a final answer. Continue.",
        "When you know the answer, stop calling tools and put your final answer within \\boxed{}.",
    ]
    lines: list[str] = []
    for i in range(n_lines):
        if i % 7 == 6:
            a, b, m = rng.randint(10, 9999), rng.randint(10, 9999), rng.randint(2, 99)
            task = rng.choice([f"Compute {a} * {b}.", f"Compute {a} + {b}.", f"Compute {a} - {b}.",
                               f"Compute ({a} * {b}) mod {m}."])
            lines.append(f"{rng.choice(instructions)}\n{task}")
            continue
        kind = i % 5
        a, b = rng.randint(0, 99999), rng.randint(1, 999)
        if kind == 0:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) + f" {a}.")
        elif kind == 1:
            lines.append(f"x = {a}\ny = {b}\nprint(x * y, x % y, x // y)\n")
        elif kind == 2:
            lines.append(f"import math\nfor i in range({b}):\n    total += math.gcd(i, {a})\nprint(total)\n")
        elif kind == 3:
            lines.append(_render_chatml(tool_demo_messages(rng)))
        else:
            lines.append(
                f'{TOOL_CALL_OPEN}{{"name": "python", "arguments": {{"code": "print({a}+{b})"}}}}'
                f"{TOOL_CALL_CLOSE} \\frac{{{a}}}{{{b}}} = {a / b:.4f}"
            )
    return lines


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer on the built-in corpus (deterministic: single thread)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # The trainer is parallel by default; one thread makes merges repeat exactly. Restore after.
    previous = os.environ.get("RAYON_NUM_THREADS")
    os.environ["RAYON_NUM_THREADS"] = "1"
    try:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                # one token per digit, as Qwen2 does: numbers copy and compare digit by digit
                pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(builtin_corpus(), trainer=trainer)
    finally:
        if previous is None:
            os.environ.pop("RAYON_NUM_THREADS", None)
        else:
            os.environ["RAYON_NUM_THREADS"] = previous
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, TOOL_CALL_OPEN, TOOL_CALL_CLOSE],
        chat_template=CHATML_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# ---------------------------------------------------------------------------------------------------
# Model presets
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyPreset:
    """Shape of a Qwen2-style decoder (a subset of ``transformers.Qwen2Config``)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 4096


PRESETS: dict[str, TinyPreset] = {
    # ~0.9M parameters: ~9-10k tokens/s training and ~1.4k tokens/s generation on 2 CPU cores
    "tiny": TinyPreset(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=384),
    # ~9M parameters: sharper policies for the mismatch study; still trains on CPU
    "small": TinyPreset(hidden_size=256, num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=4,
                        intermediate_size=768),
}


def _preset(name: str) -> TinyPreset:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown tiny model preset {name!r}; choose one of {sorted(PRESETS)}.{hint}")
    return PRESETS[name]


def _fingerprint(preset: str, seed: int) -> str:
    import tokenizers
    import transformers

    blob = json.dumps(
        {
            "preset": asdict(_preset(preset)),
            "seed": seed,
            "corpus": CORPUS_VERSION,
            "vocab": TOKENIZER_VOCAB_SIZE,
            "template": CHATML_TEMPLATE,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_model(preset: str, vocab_size: int, *, seed: int = 0, pad_token_id: int | None = None,
                eos_token_id: int | None = None) -> PreTrainedModel:
    """A freshly initialised Qwen2-style model of the named preset (deterministic for a seed)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    p = _preset(preset)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_key_value_heads,
        intermediate_size=p.intermediate_size,
        max_position_embeddings=p.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def build_tiny(preset: str = "tiny", *, seed: int = 0, cache_dir: Path | None = None,
               force: bool = False) -> Path:
    """Build (or find in the cache) the tokenizer and model of ``preset``; return the checkpoint folder."""
    _preset(preset)
    root = Path(cache_dir) if cache_dir is not None else agentrl_home() / "models"
    target = root / f"{preset}-s{seed}-{_fingerprint(preset, seed)}"
    if target.exists() and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    model = build_model(preset, len(tokenizer), seed=seed, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    # Write into a temporary sibling, then rename: a crash never leaves a half-written cache entry.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny(preset: str = "tiny", *, seed: int = 0,
              cache_dir: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Model and tokenizer of a tiny preset, loaded with ``from_pretrained`` like any HF checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny(preset, seed=seed, cache_dir=cache_dir)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
