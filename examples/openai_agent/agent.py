"""An agent written only against the ``openai`` client: it solves a math task with a python tool.

It knows nothing of agentrl's training: it gets a ``base_url`` (any OpenAI-compatible endpoint) and a task,
offers the model one function tool, ``python``, runs the code the model asks for in the kit's sandbox
(``tools.client``, at ``$AGENTRL_SANDBOX_URL``), sends back the output, and returns the model's final
answer. Train it with::

    python -m agentrl.train env.id=examples.openai_agent.agent:solve sft.steps=0 run.steps=2 eval.tasks=8

(``agentrl.proxy.AgentEnv`` gives it a per-episode ``base_url`` on the proxy and scores the answer it
returns with the task env's verifier), or run it once against a proxy you started yourself::

    python -m agentrl.proxy --port 8000 &
    python -m examples.openai_agent.agent --base-url http://127.0.0.1:8000/s/try-1/v1 --question "Compute 17 * 23."
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from typing import Any

from openai import OpenAI

from tools.client import SyncSandboxClient

MAX_TURNS = 3
"""Model calls per task at most."""
MAX_TOKENS = 64
"""Tokens per model call at most."""
RUN_TIMEOUT_S = 5.0
"""Seconds one code snippet may run in the sandbox."""
REQUEST_TIMEOUT_S = 120.0
"""Seconds for one model call (the OpenAI client's own default is 10 minutes)."""
# The tool result is phrased as the kit's python tool phrases it ("Code execution result: ..."), the format
# the tiny model's SFT warm-up teaches; any phrasing works for a model that follows instructions.
RESULT_PREFIX = "Code execution result: "
PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python 3 code and return what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the code"}},
                       "required": ["code"]},
    },
}
SYSTEM_PROMPT = ("Solve the problem. You can call the python tool to compute; give the final answer within "
                 "\\boxed{}.")

_sandboxes: dict[str, SyncSandboxClient] = {}
_sandboxes_lock = threading.Lock()


def sandbox() -> SyncSandboxClient:
    """One sandbox client per process (it is thread safe), at $AGENTRL_SANDBOX_URL."""
    url = os.environ.get("AGENTRL_SANDBOX_URL")
    if not url:
        raise RuntimeError("set AGENTRL_SANDBOX_URL to a sandbox (python -m tools.server); training sets it")
    with _sandboxes_lock:
        if url not in _sandboxes:
            _sandboxes[url] = SyncSandboxClient(url, token=os.environ.get("AGENTRL_SANDBOX_TOKEN"))
        return _sandboxes[url]


def run_python(code: str) -> str:
    """The tool: run ``code`` in the sandbox; its output (or error) as the model will read it."""
    response = sandbox().run_code(code, run_timeout=RUN_TIMEOUT_S)
    result = response.run_result
    if result is None:
        return RESULT_PREFIX + f"the sandbox could not run the code ({response.message})"
    output = (result.stdout or "") + (result.stderr or "")
    return RESULT_PREFIX + (output if output.strip() else "(no output; use print() to show values)")


def tool_output(call: Any) -> str:
    """Run one tool call; bad arguments are reported to the model, as a tool would."""
    try:
        code = json.loads(call.function.arguments)["code"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"Error: the python tool takes {{\"code\": \"...\"}}, got {call.function.arguments!r}"
    return run_python(str(code))


def solve(base_url: str, task: dict[str, Any]) -> str:
    """Answer ``task`` (``task["messages"]`` if given, else its ``question``); returns the final answer text."""
    client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused"),
                    timeout=REQUEST_TIMEOUT_S, max_retries=2)
    messages: list[dict[str, Any]] = list(task.get("messages") or [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task["question"]}])
    answer = ""
    for _ in range(MAX_TURNS):
        response = client.chat.completions.create(model="policy", messages=messages, tools=[PYTHON_TOOL],
                                                  max_tokens=MAX_TOKENS, temperature=1.0)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        answer = message.content or ""
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": tool_output(call)})
    client.close()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the example agent once against an OpenAI-compatible URL.")
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/s/try-1/v1")
    parser.add_argument("--question", default="Compute 17 * 23.")
    args = parser.parse_args()
    print(solve(args.base_url, {"question": args.question}))


if __name__ == "__main__":
    main()
