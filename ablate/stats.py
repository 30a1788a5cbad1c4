"""Mean and confidence interval over seeds: the one summary every figure shows.

Studies run a handful of seeds per grid point, so the interval uses Student's t rather
than the normal approximation, which would be too narrow for n of 2 to 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special as _special

SUMMARY_COLUMNS = ["mean", "ci_low", "ci_high", "n"]
ACCURACY = (0.0, 1.0)  # an accuracy's interval never leaves what an accuracy can be


class PoolingError(ValueError):
    """A summary asked to pool runs of different configs as if they were seeds of one."""


def mean_ci(values, level: float = 0.95, bounds: tuple[float, float] | None = None) -> tuple[float, float, float, int]:
    """Mean of ``values`` with a two-sided Student-t confidence interval.

    Returns ``(mean, low, high, n)`` where ``n`` counts the values that are not NaN
    (unfinished runs carry NaN and must not pull the mean). One value has no spread to
    estimate, so its interval is ``(nan, nan)``; no values give ``(nan, nan, nan, 0)``.
    ``bounds`` clips the interval to the values the quantity can take (``ACCURACY``).

    Example:
        >>> mean_ci([1.0, 2.0, 3.0])  # 2 +- t(0.975, 2) * 1 / sqrt(3)
        (2.0, -0.484..., 4.484..., 3)
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(_special.stdtrit(n - 1, (1.0 + level) / 2.0)) * sem  # Student t's quantile
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high, n


def summarize(
    frame: pd.DataFrame, by: list[str], value: str = "test_acc", bounds: tuple[float, float] | None = None
) -> pd.DataFrame:
    """One row per group of ``by``: the ``by`` columns, then mean, ci_low, ci_high, n.

    Rows are sorted by ``by``. A group whose values are all NaN is kept with n == 0, so
    a grid point that only produced unfinished runs still shows up as missing. Where the
    frame names each run's ``config_hash``, a group must hold one config: its rows are
    seeds of it, and pooling other configs into it raises ``PoolingError``.
    """
    by = list(by)
    if frame.empty:
        return pd.DataFrame(columns=by + SUMMARY_COLUMNS)
    if "config_hash" in frame.columns:
        configs = frame.groupby(by, dropna=False)["config_hash"].nunique()
        if (configs > 1).any():
            raise PoolingError(
                f"{int(configs.max())} configs share one value of {', '.join(by)}: statistics are "
                "taken over the seeds of one config, never across configs (draw one variant)"
            )
    # dropna=False: a config key that is unset for some runs is still a group of its own.
    grouped = frame.groupby(by, sort=True, dropna=False)[value]
    rows = [
        (*(key if isinstance(key, tuple) else (key,)), *mean_ci(group.to_numpy(), bounds=bounds))
        for key, group in grouped
    ]
    out = pd.DataFrame(rows, columns=by + SUMMARY_COLUMNS)
    out["n"] = out["n"].astype(int)
    return out.sort_values(by, kind="stable").reset_index(drop=True)


# The seed is the unit of replication: a comparison's differences are one per seed (the runs
# of other axes averaged within a seed first), and every test below takes those.

ALPHA = 0.05
EXACT_MAX = 16  # up to 2**16 sign vectors are enumerated; past that they are sampled
_SAMPLES = 200_000


@dataclass(frozen=True)
class PairedTest:
    """A test of per-seed differences against a boundary (0, a margin, a log ratio).

    ``p_above`` and ``p_below`` are the one-sided p-values for "the mean difference is above
    (below) the boundary"; ``p`` is the two-sided one. ``low``/``high`` are the Student-t
    interval of the mean difference (NaN under two seeds or with no spread). ``test`` names
    what gave the p-values, and ``floor`` is the smallest two-sided p the design can give
    (0 for the t-test; 2 / 2**n for the sign-flip test of n seeds).
    """

    mean: float
    low: float
    high: float
    n: int
    p_above: float
    p_below: float
    test: str  # "paired t" | "exact sign-flip" | "" (under two seeds: none)
    floor: float

    @property
    def p(self) -> float:
        if math.isnan(self.p_above):
            return math.nan
        return min(1.0, 2 * min(self.p_above, self.p_below))

    def two_sided(self, side: str) -> float:
        """``side`` ("above" or "below") as a two-sided-equivalent p: it is below 0.05 exactly
        when the 95% two-sided interval lies on that side of the boundary."""
        p = self.p_above if side == "above" else self.p_below
        return p if math.isnan(p) else min(1.0, 2 * p)


def design(seeds: int, blocks: int, axes: list[str]) -> str:
    """ "3 seeds x 5 blocks (model.channels.1)", or "3 seeds": what a test is over."""
    text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    return text if blocks <= 1 else f"{text} x {blocks} blocks ({', '.join(axes)})"


def _clean(values) -> np.ndarray:
    x = pd.to_numeric(pd.Series(np.asarray(values, dtype=object).ravel()), errors="coerce").to_numpy(dtype=float)
    return x[~np.isnan(x)]


def sign_flip(d) -> tuple[float, float]:
    """Exact one-sided p-values (above, below) of the sign-flip (randomisation) test of the
    mean of ``d`` against 0: under the null each difference is as likely to have either
    sign, so every one of the 2**n sign vectors is equally likely. Zeros flip to themselves,
    which makes this the exact sign test (McNemar's, paired 0/1) when ``d`` is in {-1, 0, 1}."""
    d = _clean(d)
    n = d.size
    if n == 0:
        return 1.0, 1.0
    if n <= EXACT_MAX:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:  # too many to enumerate: a fixed-seed sample, so the same runs give the same p
        signs = np.random.default_rng(0).choice([-1, 1], size=(_SAMPLES, n))
    sums = signs @ d
    observed = d.sum()
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    return float(np.mean(sums >= observed - tol)), float(np.mean(sums <= observed + tol))


def paired_test(diffs, bound: float = 0.0, exact: bool = False, level: float = 0.95) -> PairedTest:
    """Per-seed differences against ``bound``: Student's paired t-test, or the exact sign-flip
    test where the normal approximation fails, that is for a 0/1 metric (``exact``) and for
    differences with no spread (all equal: the t statistic is undefined, and "p = 0" would
    claim a certainty two or three seeds cannot give)."""
    d = _clean(diffs)
    mean, low, high, n = mean_ci(d, level)
    if n < 2:
        return PairedTest(mean, math.nan, math.nan, n, math.nan, math.nan, "", math.nan)
    shifted = d - bound
    flat = _flat(d)
    if exact or flat:
        above, below = sign_flip(shifted)
        if flat:
            low = high = math.nan
        nonzero = int(np.count_nonzero(np.abs(shifted) > 1e-12 * max(1.0, float(np.abs(d).max()))))
        return PairedTest(mean, low, high, n, above, below, "exact sign-flip", sign_flip_floor(nonzero))
    stat = (mean - bound) / (float(d.std(ddof=1)) / math.sqrt(n))
    return PairedTest(
        mean, low, high, n, float(_special.stdtr(n - 1, -stat)), float(_special.stdtr(n - 1, stat)), "paired t", 0.0
    )


def _flat(d: np.ndarray) -> bool:
    """No spread, up to rounding: 0.5 - 0.7 and 0.52 - 0.72 are one difference."""
    return float(np.ptp(d)) <= 1e-9 * max(1.0, float(np.abs(d).max()))


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test of ``n`` seeds (differences not 0) can give."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN): it keeps the
    chance of any false rejection in the family at or below the level, for any dependence."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    k = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (k - rank) * p[i]))
        out[i] = running
    return out.tolist()
