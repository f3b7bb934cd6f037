"""Methods of the mismatch study: a label -> the LearnerConfig it trains with.

Label grammar: ``NAME[@SIGMA]``.

| NAME          | learner                                                                      |
|---------------|------------------------------------------------------------------------------|
| `bypass`      | Seq-Bypass: sequence ratio vs mu, no noise, the paper's clip [0.5, 4.0], dual clip 3 |
| `bypass-ppo`  | the same with the usual PPO clip [0.8, 1.2] (dual clip 3 kept)               |
| `tis`, `mis`, `icepop`, `gspo`, `ppo-decoupled` | the alp.presets baselines (recomputed pi_old)  |
| `alp`         | Seq-ALP: sequence ratio, noise on every decoder layer's input                |
| `alp-token`   | Token-ALP                                                                    |
| `alp-early`, `alp-middle`, `alp-late` | Seq-ALP with noise on one third of the layers         |
| `alp-logits`  | Seq-ALP with noise only on the LM head's input                               |

SIGMA (ALP names only): ``0`` (the same objective and clip with no noise: the control that isolates the
noise), ``rel<x>`` (sigma x relative to each token's hidden-state RMS) or ``abs<x>`` (the paper's absolute
sigma). Without ``@`` an ALP name takes the study's default sigma. Perturbing methods also get the sigma
regulariser alpha * sigma^2 - beta * log sigma^2 (paper dev code: alpha = beta = 1e-3).

Two labels that resolve to the same LearnerConfig (``alp@0`` and ``bypass``) are one run: see
:func:`resolve_methods`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ALP_NAMES", "BASE_METHODS", "Method", "parse_sigma", "resolve_method", "resolve_methods"]

# name -> (alp preset, overrides of it)
BASE_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "bypass": ("bypass", {}),
    "bypass-ppo": ("bypass", {"epsilon_low": 0.2, "epsilon_high": 0.2}),
    "tis": ("tis", {}),
    "mis": ("mis", {}),
    "icepop": ("icepop", {}),
    "gspo": ("gspo", {}),
    "ppo-decoupled": ("ppo-decoupled", {}),
    "alp": ("alp", {}),
    "alp-token": ("alp-token", {}),
    "alp-early": ("alp", {"perturb_layers": "early"}),
    "alp-middle": ("alp", {"perturb_layers": "middle"}),
    "alp-late": ("alp", {"perturb_layers": "late"}),
    "alp-logits": ("alp", {"perturb_layers": "logits"}),
}
ALP_NAMES = tuple(n for n in BASE_METHODS if n.startswith("alp"))
_SIGMA = re.compile(r"^(?P<scale>rel|abs)(?P<value>\d*\.?\d+(?:e-?\d+)?)$")


def parse_sigma(text: str) -> tuple[str, float]:
    """``rel0.01`` -> ("relative", 0.01); ``abs1e-6`` -> ("absolute", 1e-6); ``0`` -> ("none", 0.0)."""
    text = str(text).strip().lower()
    if text in ("0", "0.0", "none"):
        return "none", 0.0
    m = _SIGMA.match(text)
    if m is None or not float(m.group("value")) > 0:
        raise ValueError(f"sigma {text!r}: write rel<x> (relative to the hidden-state RMS, e.g. rel0.01), "
                         "abs<x> (absolute, e.g. abs1e-6) or 0 (no noise)")
    return ("relative" if m.group("scale") == "rel" else "absolute"), float(m.group("value"))


@dataclass(frozen=True)
class Method:
    label: str
    """The label as written (``alp@rel0.01``)."""
    name: str
    """The base name (``alp``)."""
    sigma: str
    """The sigma part (``rel0.01``, ``0``) or '' for methods without noise."""
    config: dict[str, Any]
    """LearnerConfig fields (preset resolved, study overrides applied)."""

    @property
    def perturbs(self) -> bool:
        return self.config.get("perturb_layers", "all") != "none"

    @property
    def control(self) -> str | None:
        """The label of the same objective and clip without noise (None for non-ALP methods)."""
        if self.name not in ALP_NAMES:
            return None
        return "alp-token@0" if self.name == "alp-token" else "bypass"


def resolve_method(label: str, *, default_sigma: str, base: dict[str, Any] | None = None,
                   sigma_reg: tuple[float, float] = (1e-3, 1e-3), sigma_lr: float | None = None) -> Method:
    """The Method for ``label``; ``base`` holds overrides every method shares (lr, mini_batch_size, seed...)."""
    from alp.presets import get_preset

    name, _, sigma = str(label).strip().partition("@")
    if name not in BASE_METHODS:
        import difflib

        close = difflib.get_close_matches(name, BASE_METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Methods: {', '.join(BASE_METHODS)} (ALP ones take @sigma)")
    preset, overrides = BASE_METHODS[name]
    overrides = {**(base or {}), **overrides}
    if name in ALP_NAMES:
        scale, value = parse_sigma(sigma or default_sigma)
        if scale == "none":
            overrides["perturb_layers"] = "none"
            sigma = "0"
        else:
            overrides.update(noise_scale=scale, sigma_init=value, sigma_reg_alpha=sigma_reg[0],
                             sigma_reg_beta=sigma_reg[1])
            if sigma_lr is not None:
                overrides["sigma_lr"] = sigma_lr
            sigma = sigma or default_sigma
    elif sigma:
        raise ValueError(f"method {label!r}: only ALP methods ({', '.join(ALP_NAMES)}) take @sigma")
    try:
        config = get_preset(preset, **overrides).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"method {label!r}: {exc}") from exc
    if config["perturb_layers"] == "none":  # noise off: sigma settings are inert, keep configs comparable
        for key in ("sigma_init", "noise_scale", "sigma_reg_alpha", "sigma_reg_beta", "sigma_lr"):
            config.pop(key)
    return Method(label=f"{name}@{sigma}" if sigma else name, name=name, sigma=sigma, config=config)


def resolve_methods(labels: list[str], **kwargs: Any) -> tuple[list[Method], dict[str, str]]:
    """(distinct methods to run, aliases label -> the label that runs the identical config).

    ``alp@0`` is exactly ``bypass`` (sequence ratio vs mu, same clip, no noise), so it runs once and is
    reported under the first label given.
    """
    out: list[Method] = []
    aliases: dict[str, str] = {}
    for label in labels:
        m = resolve_method(label, **kwargs)
        twin = next((o for o in out if o.config == m.config), None)
        if twin is None:
            if any(o.label == m.label for o in out):
                continue
            out.append(m)
        elif twin.label != m.label:
            aliases[m.label] = twin.label
    return out, aliases
