"""Registry: built-ins, check_env on every registered env, module:Class, suggestions, duplicates."""

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import EnvNotFoundError, RegistrationError

BUILTINS = {
    "agentrl/Math-v0",
    "agentrl/PythonMath-v0",
    "agentrl/Arithmetic-v0",
    "agentrl/HumanEval-v0",
    "agentrl/MultiTool-v0",
    "agentrl/GuessNumber-v0",
}


def test_builtins_listed():
    assert BUILTINS <= set(envs.list())


@pytest.mark.parametrize("env_id", sorted(envs.list()))
def test_check_env_every_registered_env(env_id):
    env = envs.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any gymnasium checker warning fails the env
        check_env(env, skip_render_check=True)
    # Our own addition: a first step of a seeded episode must not truncate.
    env.reset(seed=0)
    assert not env.step("just thinking").truncated


def test_make_module_colon_class_and_kwargs():
    env = envs.make("envs.arithmetic_env:ArithmeticEnv", digits=2, max_turns=4)
    assert env.max_turns == 4
    env.reset(seed=0)
    assert all(len(str(x)) == 2 for x in env.task.metadata["operands"])


def test_defaults_are_copied_and_overridable():
    envs.register("tests/ArithTwo-v0", "envs.arithmetic_env:ArithmeticEnv", override=True, digits=2, ops=["mul"])
    env = envs.make("tests/ArithTwo-v0", ops=["add"])
    env.reset(seed=0)
    assert env.task.metadata["op"] == "add"
    assert envs.spec("tests/ArithTwo-v0").kwargs["ops"] == ["mul"]
    assert gymnasium.make("tests/ArithTwo-v0").reset(seed=0)[0][-1]["content"].startswith("Compute")


def test_unknown_id_suggests_closest():
    with pytest.raises(EnvNotFoundError, match="Did you mean: 'agentrl/Arithmetic-v0'"):
        envs.make("agentrl/Arithmetc-v0")
    with pytest.raises(EnvNotFoundError):
        envs.make("nope.module:Thing")
    with pytest.raises(EnvNotFoundError, match="no attribute"):
        envs.make("envs.base:NoSuchEnv")


def test_duplicates_rejected_identical_reregistration_ok():
    envs.register("tests/Dup-v0", "envs.math_envs:MathEnv", limit=3)
    envs.register("tests/Dup-v0", "envs.math_envs:MathEnv", limit=3)
    with pytest.raises(RegistrationError, match="already registered"):
        envs.register("tests/Dup-v0", "envs.math_envs:PythonMathEnv")


def test_bad_registrations():
    with pytest.raises(RegistrationError):
        envs.register("", "envs.math_envs:MathEnv")
    with pytest.raises(RegistrationError):
        envs.register("tests/Bad-v0", "no_colon_here")


def test_constructor_errors_name_the_id():
    with pytest.raises(TypeError, match="agentrl/Math-v0"):
        envs.make("agentrl/Math-v0", no_such_kwarg=1)
