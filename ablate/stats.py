"""Mean and confidence interval over seeds: the one summary every figure shows.

Studies run a handful of seeds per grid point, so the interval uses Student's t rather
than the normal approximation, which would be too narrow for n of 2 to 5.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

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
    half = float(_scipy_stats.t.ppf((1.0 + level) / 2.0, n - 1)) * sem
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high, n


def summarize(frame: pd.DataFrame, by: list[str], value: str = "test_acc",
              bounds: tuple[float, float] | None = None) -> pd.DataFrame:
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
            raise PoolingError(f"{int(configs.max())} configs share one value of {', '.join(by)}: statistics are "
                               "taken over the seeds of one config, never across configs (draw one variant)")
    # dropna=False: a config key that is unset for some runs is still a group of its own.
    grouped = frame.groupby(by, sort=True, dropna=False)[value]
    rows = [
        (*(key if isinstance(key, tuple) else (key,)), *mean_ci(group.to_numpy(), bounds=bounds))
        for key, group in grouped
    ]
    out = pd.DataFrame(rows, columns=by + SUMMARY_COLUMNS)
    out["n"] = out["n"].astype(int)
    return out.sort_values(by, kind="stable").reset_index(drop=True)


def paired(diffs, level: float = 0.95) -> tuple[float, float, float, int, float]:
    """Paired comparison from the per-pair differences (variant minus baseline, one per seed).

    Returns ``(mean, low, high, n, p)``: the mean difference, its Student-t confidence
    interval and the two-sided p-value of the paired t-test (the one-sample t-test of the
    differences against 0). Under two pairs there is no spread to test against, so
    ``low``, ``high`` and ``p`` are NaN. Differences that are all equal leave no spread
    either, but then the evidence is as strong as it gets: p is 0 unless they are all 0.

    Example:
        >>> round(paired([0.02, 0.03, 0.025])[4], 3)  # better by 2-3 points on each of 3 seeds
        0.013
    """
    mean, low, high, n = mean_ci(diffs, level)
    if n < 2:
        return mean, math.nan, math.nan, n, math.nan
    x = np.asarray(diffs, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if np.ptp(x) == 0:
        return mean, mean, mean, n, 1.0 if mean == 0 else 0.0
    p = float(_scipy_stats.ttest_1samp(x, 0.0).pvalue)
    return mean, low, high, n, p
