"""Small statistics for study reports: Student-t quantiles, mean and spread, paired differences.

Pure Python (no scipy in the kit's dependencies). The t distribution's CDF uses the regularized incomplete
beta function, evaluated with its continued fraction (modified Lentz; Press et al., Numerical Recipes,
section 6.4), and the quantile is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Paired", "Spread", "paired", "spread", "t_cdf", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df={df} must be > 0")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (e.g. t_quantile(0.975, 1) = 12.706)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of n values (sd is nan for n < 2)."""

    n: int
    mean: float
    sd: float

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        if self.n < 2 or math.isnan(self.sd):
            return _num(self.mean, digits)
        return f"{_num(self.mean, digits)} ± {_num(self.sd, digits)}"


@dataclass(frozen=True)
class Paired:
    """Paired differences a_i - b_i: mean, sd, the two-sided t confidence interval and its level."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    level: float = 0.95

    @property
    def sign(self) -> int:
        """+1 / -1 when the interval excludes 0 on that side, 0 when it spans 0 (or cannot be computed)."""
        if self.n < 2 or math.isnan(self.low):
            return 0
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        if self.n < 2 or math.isnan(self.low):
            return f"{_signed(self.mean, digits)} (n=1, no CI)"
        return f"{_signed(self.mean, digits)} [{_signed(self.low, digits)}, {_signed(self.high, digits)}]"


def spread(values: Sequence[float]) -> Spread:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Spread(0, math.nan, math.nan)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return Spread(n, mean, sd)


def paired(a: Sequence[float | None], b: Sequence[float | None], level: float = 0.95) -> Paired:
    """Paired differences of equal-length sequences (pairs with a missing or non-finite side are dropped)."""
    if len(a) != len(b):
        raise ValueError(f"paired() needs sequences of equal length, got {len(a)} and {len(b)}")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)
         if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    s = spread(d)
    if s.n < 2:
        return Paired(s.n, s.mean, s.sd, math.nan, math.nan, level)
    half = t_quantile(0.5 + level / 2, s.n - 1) * s.sd / math.sqrt(s.n)
    return Paired(s.n, s.mean, s.sd, s.mean - half, s.mean + half, level)


def _num(x: float, digits: int) -> str:
    if x == 0 or (1e-3 <= abs(x) < 1e4):
        return f"{x:.{digits}f}"
    return f"{x:.{max(digits - 1, 1)}e}"


def _signed(x: float, digits: int) -> str:
    s = _num(x, digits)
    return s if s.startswith("-") else f"+{s}"
