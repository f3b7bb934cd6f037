"""agentrl environments: Gymnasium-style text envs over the sandbox, tasks, answer checking, registry.

    import envs
    env = envs.make("agentrl/Arithmetic-v0", digits=3)
    observation, info = env.reset(seed=0)           # (system, user) messages
    result = env.step("```python\\nprint(123 * 456)\\n```")
    result.observation                              # ({"role": "tool", "content": "Code execution result: 56088\\n"},)

``envs.register(id, entry_point, **defaults)``, ``envs.make(id_or_module_colon_class, **kwargs)``,
``envs.list()``; ``envs.verify.check(response, reference)``. Tools: ``Tool`` subclasses, typed functions
(``envs.functions``) or an MCP server's tools (``envs.mcp``). See docs/envs.md.
"""

from . import verify
from .base import BOXED_INSTRUCTION, STOP_REASONS, TOOL_METRICS, StepResult, TextEnv, ToolEnv
from .errors import EnvError, EnvNotFoundError, RegistrationError, ToolUnavailable
from .functions import FunctionTool, function_schema
from .parsers import ParseResult, PythonBlockParser, ToolCall, ToolCallTagParser
from .registration import ENTRY_POINT_GROUP, EnvSpec, make, register, reload_entry_points, spec
from .registration import list_ids as list
from .tasks import Task
from .tool import PythonTool, Tool, ToolOutput

# Built-ins, all in one place.
register("agentrl/Math-v0", "envs.math_envs:MathEnv")
register("agentrl/PythonMath-v0", "envs.math_envs:PythonMathEnv")
register("agentrl/Arithmetic-v0", "envs.arithmetic_env:ArithmeticEnv")
register("agentrl/HumanEval-v0", "envs.code_env:HumanEvalEnv")
register("agentrl/MultiTool-v0", "envs.multitool_env:MultiToolEnv")
register("agentrl/GuessNumber-v0", "envs.guess_env:GuessNumberEnv")

__all__ = [
    "BOXED_INSTRUCTION",
    "ENTRY_POINT_GROUP",
    "STOP_REASONS",
    "TOOL_METRICS",
    "EnvError",
    "EnvNotFoundError",
    "EnvSpec",
    "FunctionTool",
    "ParseResult",
    "PythonBlockParser",
    "PythonTool",
    "RegistrationError",
    "StepResult",
    "Task",
    "TextEnv",
    "Tool",
    "ToolCall",
    "ToolCallTagParser",
    "ToolEnv",
    "ToolOutput",
    "ToolUnavailable",
    "function_schema",
    "list",
    "make",
    "register",
    "reload_entry_points",
    "spec",
    "verify",
]
