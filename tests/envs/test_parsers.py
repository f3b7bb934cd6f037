"""Tool-call parsers on adversarial model output: they never raise, malformed calls explain themselves."""

import json

import pytest

from envs.parsers import PythonBlockParser, ToolCall, ToolCallTagParser, clean_text
from envs.tool import PythonTool

TOOLS = {"python": PythonTool()}


@pytest.fixture
def py():
    return PythonBlockParser()


def test_simple_block(py):
    r = py.parse("Let me compute.\n```python\nprint(2 + 2)\n```\nDone.")
    assert r.error is None and r.calls[0].name == "python" and r.calls[0].arguments["code"] == "print(2 + 2)"


def test_no_block_is_not_a_call(py):
    r = py.parse("The answer is \\boxed{4}. ```inline``` and ```text\nnot python\n```")
    assert not r.attempted


def test_last_block_wins_or_all(py):
    text = "```python\na = 1\n```\nthen\n```py\nprint(a)\n```"
    assert py.parse(text).calls[0].arguments["code"] == "print(a)"
    joined = PythonBlockParser(which="all").parse(text).calls[0].arguments["code"]
    assert joined == "a = 1\n\nprint(a)"


def test_unclosed_fence(py):
    text = "```python\nprint(7)\n"
    assert py.parse(text).calls[0].arguments["code"] == "print(7)\n"
    strict = PythonBlockParser(allow_unclosed=False).parse(text)
    assert strict.error and "not closed" in strict.error and not strict.calls


def test_nested_fence_inside_string_does_not_close(py):
    code = 'print("```")\nx = """\n```python\ninner\n"""\nprint(len(x))'
    r = py.parse(f"```python\n{code}\n```")
    assert r.calls[0].arguments["code"] == code


def test_empty_block(py):
    r = py.parse("```python\n\n```")
    assert r.error and "empty" in r.error


def test_huge_block(py):
    r = py.parse("```python\n" + "x = 1\n" * 10_000 + "```")
    assert r.error and "too long" in r.error and not r.calls


def test_invalid_utf8_and_nul(py):
    bad = b"print('\xff\xfe')\x00".decode("utf-8", "surrogateescape")
    r = py.parse(f"```python\n{bad}\n```")
    code = r.calls[0].arguments["code"]
    code.encode("utf-8")  # sendable
    assert "\x00" not in code
    assert clean_text("\udcff") == "?" or clean_text("\udcff") == "\ufffd"


@pytest.fixture
def tc():
    return ToolCallTagParser()


def test_tool_call_ok(tc):
    body = json.dumps({"name": "python", "arguments": {"code": "print(1)"}})
    r = tc.parse(f"thinking <tool_call>\n{body}\n</tool_call>", TOOLS)
    assert r.calls[0].arguments == {"code": "print(1)"}


def test_tool_call_arguments_as_string(tc):
    body = json.dumps({"name": "python", "arguments": json.dumps({"code": "print(1)"})})
    assert tc.parse(f"<tool_call>{body}</tool_call>", TOOLS).calls[0].arguments["code"] == "print(1)"


@pytest.mark.parametrize(
    "body, fragment, kind",
    [
        ("{not json", "not valid JSON", "invalid_json"),
        ("[1, 2]", "JSON object", "invalid_json"),
        ('{"arguments": {"code": "x"}}', '"name"', "invalid_json"),
        ('{"name": 5, "arguments": {}}', '"name"', "invalid_json"),
        ('{"name": "python", "arguments": [1]}', "arguments", "invalid_json"),
        ('{"name": "python", "arguments": "{bad"}', "not valid JSON", "invalid_json"),
        ('{"name": "python", "arguments": {"code": 5}}', "not of type 'string'", "invalid_arguments"),
        ('{"name": "python", "arguments": {"code": true}}', "not of type 'string'", "invalid_arguments"),
        ('{"name": "python", "arguments": {}}', "'code' is a required property", "invalid_arguments"),
        ('{"name": "python", "arguments": {"code": "x", "extra": 1}}', "'extra' was unexpected", "invalid_arguments"),
        ('{"name": "rm_rf", "arguments": {}}', "Unknown tool", "unknown_tool"),
        ("", "empty", "format"),
        ("[" * 100_000, "too long", "format"),
    ],
)
def test_tool_call_malformed(tc, body, fragment, kind):
    r = tc.parse(f"<tool_call>{body}</tool_call>", TOOLS)
    assert not r.calls and r.error and fragment in r.error and r.error_kind == kind


def test_openai_tool_calls_shape(tc):
    call = {"id": "call_1", "type": "function", "function": {"name": "python", "arguments": '{"code": "print(1)"}'}}
    inside = tc.parse(f"<tool_call>{json.dumps(call)}</tool_call>", TOOLS)
    message = tc.parse(json.dumps({"role": "assistant", "content": None, "tool_calls": [call, call]}), TOOLS)
    bare_list = tc.parse(json.dumps([call]), TOOLS)
    for r in (inside, message, bare_list):
        assert r.error is None and r.calls[0] == ToolCall("python", {"code": "print(1)"})
    assert len(message.calls) == 2
    bad = dict(call, function={"name": "python", "arguments": '{"code": 1}'})
    r = tc.parse(json.dumps({"tool_calls": [bad]}), TOOLS)
    assert r.error_kind == "invalid_arguments" and not r.calls
    # Prose that merely starts with a brace is not a call.
    assert not tc.parse('{"function" is a word here', TOOLS).attempted


def test_tool_call_deep_nesting_is_not_a_crash():
    r = ToolCallTagParser(max_chars=10**7).parse("<tool_call>" + "[" * 200_000 + "</tool_call>", TOOLS)
    assert r.error and not r.calls


def test_tool_call_unclosed(tc):
    r = tc.parse('<tool_call>{"name": "python", "arguments": {"code": "1"}}', TOOLS)
    assert r.error and "not closed" in r.error


def test_random_garbage_never_raises(py, tc):
    import random

    rng = random.Random(0)
    alphabet = "```python\n<tool_call>{}\"[]:\\\x00\udcff é中🙂"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        py.parse(text)
        tc.parse(text, TOOLS)
