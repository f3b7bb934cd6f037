"""``agentrl/MultiTool-v0``: a shop's inventory questions that take two tools to answer.

Tools (function calling, ``<tool_call>`` / OpenAI ``tool_calls``): ``lookup`` reads a small local
inventory table (made-up prices and stock, so no model knows them), ``calculator`` evaluates arithmetic
exactly, and ``python`` runs code in the sandbox. A question such as "What is the total value of the
brass hinges in stock?" needs ``lookup`` (the price and the stock) and then ``calculator`` or ``python``
(the product, e.g. 3.85 * 147); answering from memory or without arithmetic fails. Reward 1 when the
``\\boxed{}`` answer equals the exact value (``envs.verify.check``).

Seeded questions (``reset(seed=...)``), two kinds: the stock value of one item, and the cost of a
quantity of one item plus a quantity of another.
"""

from __future__ import annotations

import ast
import operator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from .base import BOXED_INSTRUCTION, ToolEnv
from .functions import FunctionTool
from .tasks import Task
from .tool import PythonTool

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
"""Largest exponent ``calculator`` computes (keeps ``9**9**9`` from eating the process)."""

# name -> (unit price in dollars, units in stock). Made up for this env.
INVENTORY: dict[str, tuple[str, int]] = {
    "brass hinge": ("3.85", 147),
    "steel bolt": ("0.45", 2310),
    "copper pipe": ("12.60", 38),
    "oak plank": ("18.25", 64),
    "rubber washer": ("0.12", 5120),
    "paint roller": ("7.95", 83),
    "garden hose": ("24.50", 29),
    "wood screw": ("0.08", 9400),
    "door handle": ("15.75", 56),
    "light bulb": ("2.35", 612),
    "extension cord": ("11.40", 71),
    "tape measure": ("9.65", 48),
    "pvc elbow": ("1.15", 860),
    "ceiling hook": ("0.95", 1275),
    "drill bit": ("4.30", 390),
    "padlock": ("8.70", 122),
}

SYSTEM_PROMPT = (
    "You answer questions about a hardware shop's inventory. Prices and stock are only in the inventory "
    "table: use the lookup tool for them, and a calculation tool for arithmetic. " + BOXED_INSTRUCTION
)


def lookup(item: str) -> str:
    """Look up an item of the shop's inventory: its unit price in dollars and the units in stock.

    Args:
        item: The item's name, e.g. "steel bolt".
    """
    key = item.strip().lower()
    if key not in INVENTORY and key.endswith("s"):
        key = key[:-1]  # "steel bolts"
    if key not in INVENTORY:
        raise KeyError(f"no item {item!r} in the inventory; items: {', '.join(sorted(INVENTORY))}")
    price, stock = INVENTORY[key]
    return f"{key}: unit price ${price}, {stock} units in stock"


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _evaluate(node.left), _evaluate(node.right)
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise ValueError(f"only whole exponents up to {MAX_EXPONENT} are supported")
        return base ** int(exponent)
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


def _show(value: Fraction) -> str:
    """Exact decimal when the value has one (a terminating fraction), else 12 significant digits."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{float(value):.12g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly: numbers, + - * / // % ** and parentheses.

    Args:
        expression: The expression, e.g. "3.85 * 147 + 2 * 0.45".
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {e.msg}") from None
    try:
        return _show(_evaluate(tree))
    except ZeroDivisionError:
        raise ValueError("division by zero") from None


class InventoryTasks:
    """Seeded questions over ``INVENTORY``; the answer is computed exactly."""

    def sample(self, rng: np.random.Generator) -> Task:
        items = sorted(INVENTORY)
        if rng.integers(2) == 0:
            item = items[int(rng.integers(len(items)))]
            price, stock = INVENTORY[item]
            value = Fraction(price) * stock
            question = f"What is the total value in dollars of the {item}s in stock (unit price times units in stock)?"
            return Task(question, _show(value), metadata={"kind": "stock_value", "items": [item]})
        a, b = (items[int(i)] for i in rng.choice(len(items), size=2, replace=False))
        qa, qb = int(rng.integers(2, 60)), int(rng.integers(2, 60))
        value = Fraction(INVENTORY[a][0]) * qa + Fraction(INVENTORY[b][0]) * qb
        question = f"How much in dollars do {qa} {a}s and {qb} {b}s cost together?"
        return Task(question, _show(value), metadata={"kind": "order_cost", "items": [a, b]})


class MultiToolEnv(ToolEnv):
    """Inventory questions with three tools: ``lookup``, ``calculator`` and ``python`` (the sandbox)."""

    def __init__(self, *, max_turns: int = 5, system_prompt: str | None = SYSTEM_PROMPT, **kwargs: Any):
        tools = [FunctionTool(lookup), FunctionTool(calculator), PythonTool()]
        super().__init__(InventoryTasks(), tools=tools, max_turns=max_turns, system_prompt=system_prompt, **kwargs)
