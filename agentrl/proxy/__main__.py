"""``python -m agentrl.proxy``: serve a model as an OpenAI-compatible endpoint that records tokens.

    python -m agentrl.proxy                                   # the tiny local model (built if needed), :8000
    python -m agentrl.proxy --model runs/tiny-arithmetic/final --port 8001
    python -m agentrl.proxy --model Qwen/Qwen2.5-0.5B-Instruct --backend vllm
    python -m agentrl.proxy --model Qwen/Qwen2.5-7B-Instruct --backend openai --backend-url http://gpu1:8000

An agent uses ``base_url=http://127.0.0.1:8000/s/<session>/v1``, one session per episode; read the record
with ``GET /s/<session>/trajectory`` and set the reward with ``POST /s/<session>/reward``. docs/proxy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from agentrl.proxy.tool_calls import DEFAULT_FENCE_TOOL

DEFAULT_PORT = 8000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m agentrl.proxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder or HF id; default: the tiny local preset "
                   "(tiny, small also name presets)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    p.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf",
                   help="hf: in process (CPU default); vllm: in-process engine; openai: token-id /v1/completions "
                   "servers (--backend-url), the proxy only renders, records and parses")
    p.add_argument("--backend-url", action="append", default=[], help="openai backend: a server URL (repeatable)")
    p.add_argument("--served-model-name", default=None, help="the id /v1/models reports (default: --model)")
    p.add_argument("--fence-tool", default=DEFAULT_FENCE_TOOL,
                   help="function tool a ```python block calls (when the request offers it)")
    p.add_argument("--max-context-tokens", type=int, default=None,
                   help="prompt + completion tokens at most (default: the model's max_position_embeddings)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per call when a request names none")
    p.add_argument("--no-admission", action="store_true", help="send each call to the backend at once (default "
                   "for hf: calls whose answers went out together wait, at most 100 ms, to be batched together)")
    p.add_argument("--device", default="cpu", help="hf backend: torch device")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_backend(args: argparse.Namespace) -> tuple[Any, Any, int | None]:
    """(backend, tokenizer, context length) for the arguments."""
    from transformers import AutoConfig, AutoTokenizer

    from agentrl.runtime import load_model, model_folder

    path = model_folder(args.model, seed=args.seed)  # a tiny preset (or none) is built locally first
    if args.backend == "hf":
        from agentrl.inference.hf import HFBackend

        model, tokenizer = load_model(path, dtype=args.dtype, device=args.device)
        backend = HFBackend(model, tokenizer, copy_model=False, seed=args.seed, device=args.device)
        return backend, tokenizer, getattr(model.config, "max_position_embeddings", None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    if args.backend == "vllm":
        from agentrl.inference.vllm import VLLMBackend

        return VLLMBackend(path, seed=args.seed, max_model_len=args.max_context_tokens), tokenizer, context
    if not args.backend_url:
        raise SystemExit("--backend openai needs --backend-url (a token-id /v1/completions server, e.g. vllm serve)")
    from agentrl.inference.openai import OpenAICompletionsBackend

    return OpenAICompletionsBackend(args.backend_url, model=args.served_model_name or args.model), tokenizer, context


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[agentrl.proxy] %(message)s")
    import uvicorn

    from agentrl.proxy.admission import Admission
    from agentrl.proxy.app import DEFAULT_KEEP_ALIVE_S, create_app
    from agentrl.proxy.proxy import DEFAULT_MAX_TOKENS, Proxy

    backend, tokenizer, context = build_backend(args)
    admission = Admission() if args.backend == "hf" and not args.no_admission else None
    proxy = Proxy(backend, tokenizer, model_name=args.served_model_name or args.model or "agentrl-tiny",
                  fence_tool=args.fence_tool, max_context_tokens=args.max_context_tokens or context,
                  default_max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS, admission=admission)
    print(f"[agentrl.proxy] {proxy.model_name} on {args.backend}: base_url http://{args.host}:{args.port}/s/"
          "<session>/v1 (one session per episode)", flush=True)
    try:
        uvicorn.run(create_app(proxy), host=args.host, port=args.port, log_level="warning",
                    timeout_keep_alive=int(DEFAULT_KEEP_ALIVE_S))
    finally:
        asyncio.run(backend.aclose())
    return 0


if __name__ == "__main__":
    sys.exit(main())
