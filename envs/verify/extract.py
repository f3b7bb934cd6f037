"""Pull the final answer out of a model response: ``\\boxed{...}`` with nested braces, several boxes
(the last one wins), ``\\boxed 5``, ``\\fbox{}``, and plain "the answer is" tails as a fallback."""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*(?:\.\s*)?$", re.I | re.S)


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each "{" -> index of its "}" in one linear pass (escaped \\{ \\} are content)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def _box_contents(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` in order; an unclosed box is ignored. Linear time."""
    if not any(cmd in text for cmd in _BOX_COMMANDS):
        return []
    match = _matching_braces(text)
    found: list[tuple[int, str]] = []
    for cmd in _BOX_COMMANDS:
        start = 0
        while (pos := text.find(cmd, start)) != -1:
            start = pos + len(cmd)
            i = start
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "{":
                if i in match:
                    found.append((pos, text[i + 1 : match[i]]))
            elif i > start and i < len(text):
                # "\\boxed 5": the argument runs to the next whitespace or "$".
                arg = re.match(r"[^\s$]+", text[i:])
                if arg:
                    found.append((pos, arg.group(0)))
    found.sort()
    return [content for _, content in found]


def all_boxed(text: str) -> list[str]:
    """Contents of every complete box, in order of appearance."""
    return _box_contents(text)


def last_boxed(text: str) -> str | None:
    """The content of the last complete box, or None when there is none."""
    boxes = _box_contents(text)
    return boxes[-1].strip() if boxes else None


def has_boxed(text: str) -> bool:
    return last_boxed(text) is not None


def extract_answer(response: str) -> tuple[str | None, str]:
    """(answer, how) from a full response or a bare answer.

    ``how`` is ``"boxed"`` (last complete box), ``"answer_is"`` ("The answer is X" tail), ``"bare"``
    (a short response with no box is taken as the answer itself) or ``"none"``.
    """
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed, "boxed"
    stripped = response.strip()
    if any(cmd in stripped for cmd in _BOX_COMMANDS):
        return None, "none"  # a box was started but never closed
    if stripped and len(stripped) <= 200 and "\n" not in stripped:
        match = _ANSWER_IS.search(stripped)
        if match and len(stripped) > len(match.group(1)) + 8:
            return match.group(1).strip(), "answer_is"
        return stripped, "bare"
    tail = stripped[-300:]
    match = _ANSWER_IS.search(tail)
    if match:
        return match.group(1).strip(), "answer_is"
    return None, "none"
