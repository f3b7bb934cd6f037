"""A small safe grammar from LaTeX-ish math to sympy, used when math-verify is not installed.

Recursive descent over a fixed token set; it builds sympy objects directly and never calls ``eval``,
``sympify`` or ``parse_expr`` on the text. Covers what short answers use: integers, decimals, + - * /
^, implicit multiplication, parentheses / braces, \\frac, \\sqrt (and \\sqrt[n]), \\pi, \\cdot,
\\times, single-letter variables and comma-separated tuples.
"""

from __future__ import annotations

import re
from typing import Any

MAX_CHARS = 500
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\.\d+|\d+)|(?P<cmd>\\[a-zA-Z]+)|(?P<var>[a-zA-Z])|(?P<op>[-+*/^(){}\[\],_]))"
)


class ParseError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_CHARS:
        raise ParseError("too long")
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"unexpected {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        import sympy

        self.sp = sympy
        self.t = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ParseError(f"expected {value!r}")
        self.i += 1
        return tok

    def top(self) -> Any:
        items = [self.expr()]
        while self.peek() == ("op", ","):
            self.take(",")
            items.append(self.expr())
        if self.peek() is not None:
            raise ParseError("trailing input")
        return tuple(items) if len(items) > 1 else items[0]

    def expr(self) -> Any:
        self.depth += 1
        if self.depth > 50:
            raise ParseError("too deeply nested")
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        self.depth -= 1
        return value

    def term(self) -> Any:
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in (("op", "*"), ("cmd", "\\cdot"), ("cmd", "\\times")):
                self.take()
                value = value * self.unary()
            elif tok == ("op", "/"):
                self.take()
                value = value / self.unary()
            elif tok is not None and (tok[0] in ("num", "var") or tok[1] in ("(", "{", "\\frac", "\\sqrt", "\\pi")):
                value = value * self.power()  # implicit multiplication
            else:
                return value

    def unary(self) -> Any:
        if self.peek() == ("op", "-"):
            self.take()
            return -self.unary()
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Any:
        base = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            exponent = self.unary() if self.peek() != ("op", "{") else self.group()
            if getattr(exponent, "is_number", False) and abs(float(exponent)) > 1000:
                raise ParseError("exponent too large")
            return base**exponent
        return base

    def group(self) -> Any:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def atom(self) -> Any:
        sp = self.sp
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end")
        kind, value = self.take()
        if kind == "num":
            return sp.Rational(value) if "." in value else sp.Integer(value)
        if kind == "var":
            return sp.Symbol(value)
        if value in ("(", "{"):
            inner = self.expr()
            self.take(")" if value == "(" else "}")
            return inner
        if value == "\\frac":
            return self.group() / self.group()
        if value == "\\sqrt":
            if self.peek() == ("op", "["):
                self.take("[")
                index = self.expr()
                self.take("]")
                return sp.root(self.group(), index)
            return sp.sqrt(self.group() if self.peek() == ("op", "{") else self.atom())
        if value == "\\pi":
            return sp.pi
        raise ParseError(f"unsupported {value!r}")


def parse_math(text: str) -> Any:
    """A sympy expression (or a tuple of them) for ``text``; raises ParseError when outside the grammar."""
    tokens = _tokens(text)
    if not tokens:
        raise ParseError("empty")
    return _Parser(tokens).top()
