"""Means with seeded bootstrap 95% intervals, and paired permutation tests, from scipy.stats.

Every curve of the study keeps its per-example values; these functions summarise them. Intervals
are BCa bootstrap intervals (scipy's default; percentile where BCa is undefined) over examples, seeded so a report
is reproducible; an interval of fewer than two examples, or of identical values, is the point itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats

N_RESAMPLES = 2000


@dataclass(frozen=True)
class MeanCI:
    """A mean over ``n`` examples with its 95% bootstrap interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (n={self.n})"


def mean_ci(values: Float[np.ndarray, "n"] | list[float], *, seed: int = 0, confidence: float = 0.95) -> MeanCI:
    """Mean of the finite values and its seeded bootstrap interval (NaN mean when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = int(values.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if n < 2 or np.ptp(values) == 0:
        return MeanCI(mean, mean, mean, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate BCa resamples; fall back below
        result = stats.bootstrap(
            (values,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
            random_state=np.random.default_rng(seed), method="BCa",
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (values,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                random_state=np.random.default_rng(seed), method="percentile",
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return MeanCI(mean, min(low, mean), max(high, mean), n)


def paired_permutation_p(
    a: Float[np.ndarray, "n"] | list[float], b: Float[np.ndarray, "n"] | list[float] | float = 0.0, *, seed: int = 0
) -> float:
    """Two-sided p-value that paired values ``a`` and ``b`` (or ``a`` and a constant) share a mean.

    Sign-flip permutation test on the paired differences (exact for n <= 12, else 9,999 resamples).
    """
    a = np.asarray(a, dtype=float)
    b = np.broadcast_to(np.asarray(b, dtype=float), a.shape)
    keep = np.isfinite(a) & np.isfinite(b)
    differences = a[keep] - b[keep]
    if differences.size < 2 or np.all(differences == 0):
        return float("nan") if differences.size < 2 else 1.0
    result = stats.permutation_test(
        (differences,), np.mean, permutation_type="samples", alternative="two-sided",
        n_resamples=9999, random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)


@dataclass(frozen=True)
class Finding:
    """A sentence the report states, with the test behind it and the number of examples."""

    sentence: str  # plain prose derived from the numbers, e.g. "Blocking Video↛Question in L2–L4 lowers ..."
    test: str  # e.g. "paired sign-flip permutation test vs. no change"
    p_value: float | None
    n: int

    def to_json(self) -> dict[str, object]:
        return {"sentence": self.sentence, "test": self.test, "p_value": self.p_value, "n": self.n}

    def __str__(self) -> str:
        if self.p_value is None:
            p = ""
        elif self.p_value != self.p_value:  # NaN: the test needs at least 2 examples
            p = ", p not defined"
        else:
            p = f", p = {self.p_value:.3g}"
        return f"{self.sentence} ({self.test}{p}, n = {self.n})"
