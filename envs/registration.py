"""The env registry, shaped like gymnasium's: ``register`` stores an ``EnvSpec``, ``make`` imports the
entry point lazily and merges a deep copy of the spec's kwargs with the caller's.

- ids are gymnasium-style (``namespace/Name-vN``); each is also registered with gymnasium so
  ``gymnasium.make(id)`` works (gymnasium adds its own wrappers there; ``envs.make`` returns the bare env
  so attributes like ``max_turns``, ``task`` and ``astep`` are reachable).
- ``module:Class`` (or ``module:factory``) strings work wherever an id does.
- third-party packages register through the ``agentrl.envs`` entry-point group: the entry point's name
  is the id, its value the ``module:Class``; they are loaded on the first lookup miss or ``list``.
- an unknown id raises ``EnvNotFoundError`` naming the closest registered ids.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium

from .errors import EnvNotFoundError, RegistrationError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "agentrl.envs"
_GYM_ID = re.compile(r"^(?:[\w:-]+/)?[\w:.-]+?(?:-v\d+)?$")


@dataclass
class EnvSpec:
    id: str
    entry_point: str | Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    nondeterministic: bool = False
    source: str = "register"
    """Where it came from: "register" (code) or "entry_point:<distribution>"."""

    def load(self) -> Callable[..., Any]:
        return load_entry_point(self.entry_point)

    def make(self, **kwargs: Any) -> Any:
        factory = self.load()
        merged = {**copy.deepcopy(self.kwargs), **kwargs}
        try:
            env = factory(**merged)
        except TypeError as e:
            raise TypeError(f"could not make {self.id!r} with kwargs {merged!r}: {e}") from e
        gym_spec = gymnasium.envs.registry.get(self.id)
        if gym_spec is not None and getattr(env, "spec", None) is None:
            env.spec = gym_spec
        return env


_registry: dict[str, EnvSpec] = {}
_lock = threading.RLock()
_entry_points_loaded = False


def load_entry_point(entry_point: str | Callable[..., Any]) -> Callable[..., Any]:
    """``module:attr`` -> the attribute (imported now); a callable is returned as is."""
    if callable(entry_point):
        return entry_point
    if not isinstance(entry_point, str) or ":" not in entry_point:
        raise RegistrationError(f"entry point must be 'module:Class' or a callable, got {entry_point!r}")
    module_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise EnvNotFoundError(f"cannot import {module_name!r} for entry point {entry_point!r}: {e}") from e
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise EnvNotFoundError(f"module {module_name!r} has no attribute {attr!r} (entry point {entry_point!r})") from None
    if not callable(obj):
        raise RegistrationError(f"entry point {entry_point!r} is not callable")
    return obj


def register(
    id: str,
    entry_point: str | Callable[..., Any],
    *,
    nondeterministic: bool = False,
    override: bool = False,
    **defaults: Any,
) -> EnvSpec:
    """Register an env: ``register("me/Sql-v0", "my_pkg.sql_env:SqlEnv", max_turns=4)``.

    ``defaults`` become the constructor kwargs (callers of ``make`` override them). Registering an id
    twice is an error unless it is the very same entry point and defaults (module re-import), or
    ``override=True``.
    """
    if not isinstance(id, str) or not id.strip() or ":" in id:
        raise RegistrationError(f"env id must be a non-empty string without ':', got {id!r}")
    if not (callable(entry_point) or (isinstance(entry_point, str) and ":" in entry_point)):
        raise RegistrationError(f"entry_point must be 'module:Class' or a callable, got {entry_point!r}")
    spec = EnvSpec(id, entry_point, dict(defaults), nondeterministic)
    with _lock:
        existing = _registry.get(id)
        if existing is not None and not override:
            if existing.entry_point == entry_point and existing.kwargs == spec.kwargs:
                return existing
            raise RegistrationError(
                f"env id {id!r} is already registered (entry point {existing.entry_point!r}); "
                "pick another id or pass override=True"
            )
        _registry[id] = spec
    _register_with_gymnasium(spec, override=existing is not None)
    return spec


def _register_with_gymnasium(spec: EnvSpec, override: bool) -> None:
    if not _GYM_ID.match(spec.id):
        logger.warning("env id %r is not a gymnasium id; gymnasium.make will not know it", spec.id)
        return
    if spec.id in gymnasium.envs.registry:
        if not override:
            return
        del gymnasium.envs.registry[spec.id]
    gymnasium.register(
        id=spec.id,
        entry_point=spec.entry_point,
        kwargs=copy.deepcopy(spec.kwargs),
        nondeterministic=spec.nondeterministic,
    )


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _registry:
                continue
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            try:
                spec = register(ep.name, ep.value)
                spec.source = f"entry_point:{dist}"
            except RegistrationError as e:
                logger.warning("skipping entry point %s = %s from %s: %s", ep.name, ep.value, dist, e)


def reload_entry_points() -> None:
    """Look at the ``agentrl.envs`` entry points again (after installing a package at runtime)."""
    global _entry_points_loaded
    with _lock:
        _entry_points_loaded = False
    _load_entry_points()


def spec(id: str) -> EnvSpec:
    """The spec of a registered id; raises EnvNotFoundError with suggestions."""
    with _lock:
        found = _registry.get(id)
    if found is None:
        _load_entry_points()
        with _lock:
            found = _registry.get(id)
    if found is None:
        ids = list_ids()
        close = difflib.get_close_matches(id, ids, n=3, cutoff=0.5)
        if not close:
            base = id.split("/")[-1].rsplit("-v", 1)[0].lower()
            close = [i for i in ids if base and base in i.lower()][:3]
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise EnvNotFoundError(
            f"no env registered as {id!r}.{hint} Registered: {', '.join(ids) or 'none'}. "
            "Use envs.register(...), an 'agentrl.envs' entry point, or a 'module:Class' string."
        )
    return found


def make(id: str, **kwargs: Any) -> Any:
    """Build an env from a registered id or a ``module:Class`` string; ``kwargs`` override the defaults."""
    if not isinstance(id, str):
        raise TypeError(f"env id must be a string, got {type(id).__name__}")
    with _lock:
        registered = id in _registry
    if not registered and ":" in id:
        return EnvSpec(id, id).make(**kwargs)
    return spec(id).make(**kwargs)


def list_ids() -> list[str]:
    """All registered ids (built-ins, ``register`` calls and installed entry points), sorted."""
    _load_entry_points()
    with _lock:
        return sorted(_registry)
