"""A unit-conversion environment with its own tool: the whole env a user writes, in one file.

The model gets questions like "How many seconds are in 2.5 hours?" and a ``convert`` tool it calls in
Qwen/Hermes format::

    <tool_call>{"name": "convert", "arguments": {"value": 2.5, "from_unit": "h", "to_unit": "s"}}</tool_call>

then answers in ``\\boxed{}``. Reward: 1 when the boxed number matches (envs.verify.check).
"""

from __future__ import annotations

from fractions import Fraction

from envs import Task, Tool, ToolEnv, ToolOutput

# Every unit as an exact multiple of its dimension's base unit.
UNITS: dict[str, tuple[str, Fraction]] = {
    "mm": ("length", Fraction(1, 1000)),
    "cm": ("length", Fraction(1, 100)),
    "m": ("length", Fraction(1)),
    "km": ("length", Fraction(1000)),
    "s": ("time", Fraction(1)),
    "min": ("time", Fraction(60)),
    "h": ("time", Fraction(3600)),
    "day": ("time", Fraction(86400)),
    "g": ("mass", Fraction(1)),
    "kg": ("mass", Fraction(1000)),
    "t": ("mass", Fraction(1_000_000)),
}
NAMES = {
    "mm": "millimetres",
    "cm": "centimetres",
    "m": "metres",
    "km": "kilometres",
    "s": "seconds",
    "min": "minutes",
    "h": "hours",
    "day": "days",
    "g": "grams",
    "kg": "kilograms",
    "t": "tonnes",
}


def convert(value: Fraction, from_unit: str, to_unit: str) -> Fraction:
    (dim_a, fa), (dim_b, fb) = UNITS[from_unit], UNITS[to_unit]
    if dim_a != dim_b:
        raise ValueError(f"cannot convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})")
    return value * fa / fb


def show(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


class ConvertTool(Tool):
    name = "convert"
    description = "Convert a value between units of length, time or mass."
    parameters = {
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string", "enum": sorted(UNITS)},
            "to_unit": {"type": "string", "enum": sorted(UNITS)},
        },
        "required": ["value", "from_unit", "to_unit"],
    }

    async def run(self, arguments, env) -> ToolOutput:
        try:
            result = convert(Fraction(str(arguments["value"])), arguments["from_unit"], arguments["to_unit"])
        except KeyError as e:
            return ToolOutput(f"Error: unknown unit {e}; known: {', '.join(sorted(UNITS))}", status="error")
        except ValueError as e:
            return ToolOutput(f"Error: {e}", status="error")
        return ToolOutput(
            f"{arguments['value']} {arguments['from_unit']} = {show(result)} {arguments['to_unit']}"
        )


class UnitTasks:
    """Seeded questions: a value in one unit, asked in a smaller unit of the same dimension."""

    def sample(self, rng) -> Task:
        units = sorted(UNITS)
        a = units[int(rng.integers(len(units)))]
        smaller = [u for u in units if UNITS[u][0] == UNITS[a][0] and UNITS[u][1] < UNITS[a][1]]
        if not smaller:
            return self.sample(rng)
        b = smaller[int(rng.integers(len(smaller)))]
        value = Fraction(int(rng.integers(1, 200)), 2 if rng.integers(2) else 1)
        answer = show(convert(value, a, b))
        question = f"How many {NAMES[b]} are in {show(value)} {NAMES[a]}?"
        return Task(question, answer, metadata={"value": show(value), "from_unit": a, "to_unit": b})


class UnitConversionEnv(ToolEnv):
    def __init__(self, max_turns: int = 3, **kwargs):
        super().__init__(
            UnitTasks(), tools=[ConvertTool()], parser="tool_call", max_turns=max_turns, **kwargs
        )
