"""agentrl environments: Gymnasium-style text envs over the sandbox, tasks, answer checking, registry.

    import envs
    env = envs.make("agentrl/Arithmetic-v0", digits=3)
    observation, info = env.reset(seed=0)           # (system, user) messages
    result = env.step("```python\\nprint(123 * 456)\\n```")
    result.observation                              # ({"role": "tool", "content": "Code execution result: 56088\\n"},)

``envs.register(id, entry_point, **defaults)``, ``envs.make(id_or_module_colon_class, **kwargs)``,
``envs.list()``; ``envs.verify.check(response, reference)``. See docs/envs.md.
"""

from . import verify
from .base import BOXED_INSTRUCTION, STOP_REASONS, StepResult, TextEnv, ToolEnv
from .errors import EnvError, EnvNotFoundError, RegistrationError, ToolUnavailable
from .parsers import ParseResult, PythonBlockParser, ToolCall, ToolCallTagParser
from .registration import ENTRY_POINT_GROUP, EnvSpec, make, register, reload_entry_points, spec
from .registration import list_ids as list
from .tasks import Task
from .tool import PythonTool, Tool, ToolOutput

# Built-ins, all in one place.
register("agentrl/Math-v0", "envs.math_envs:MathEnv")
register("agentrl/PythonMath-v0", "envs.math_envs:PythonMathEnv")
register("agentrl/Arithmetic-v0", "envs.arithmetic_env:ArithmeticEnv")

__all__ = [
    "BOXED_INSTRUCTION",
    "ENTRY_POINT_GROUP",
    "STOP_REASONS",
    "EnvError",
    "EnvNotFoundError",
    "EnvSpec",
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
    "list",
    "make",
    "register",
    "reload_entry_points",
    "spec",
    "verify",
]
