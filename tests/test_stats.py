import math

import numpy as np
import pandas as pd
import pytest

from ablate.stats import mean_ci, paired_test, summarize


def paired(diffs, level=0.95):
    """(mean, low, high, n, p) of the paired test: the tuple these tests read."""
    t = paired_test(diffs, level=level)
    return t.mean, t.low, t.high, t.n, t.p


T_975_2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_1 = 12.706204736174705


def test_mean_ci_matches_hand_computation():
    mean, low, high, n = mean_ci([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # sample sd of 1,2,3 is 1
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2.0 - half)
    assert high == pytest.approx(2.0 + half)


def test_mean_ci_level_narrows_interval():
    _, low95, high95, _ = mean_ci([1.0, 2.0, 3.0])
    _, low90, high90, _ = mean_ci([1.0, 2.0, 3.0], level=0.90)
    assert low95 < low90 < 2.0 < high90 < high95


def test_mean_ci_single_value_has_no_interval():
    mean, low, high, n = mean_ci([0.7])
    assert (mean, n) == (0.7, 1)
    assert math.isnan(low) and math.isnan(high)


def test_mean_ci_empty():
    mean, low, high, n = mean_ci([])
    assert n == 0
    assert all(math.isnan(v) for v in (mean, low, high))


def test_mean_ci_drops_nans():
    assert mean_ci([1.0, np.nan, 2.0, 3.0]) == pytest.approx(mean_ci([1.0, 2.0, 3.0]))
    assert mean_ci([np.nan, np.nan])[3] == 0
    mean, low, _, n = mean_ci(pd.Series([0.5, np.nan]))
    assert (mean, n) == (0.5, 1) and math.isnan(low)


def test_summarize_groups_counts_and_sorts():
    frame = pd.DataFrame(
        {
            "depth": [3, 1, 1, 3, 3, 2],
            "act": ["relu", "relu", "relu", "relu", "gelu", "relu"],
            "test_acc": [0.6, 0.5, 0.7, 0.8, 0.9, np.nan],
        }
    )
    out = summarize(frame, ["depth", "act"])
    assert list(out.columns) == ["depth", "act", "mean", "ci_low", "ci_high", "n"]
    groups = list(zip(out["depth"], out["act"]))
    assert groups == [(1, "relu"), (2, "relu"), (3, "gelu"), (3, "relu")]
    assert list(out["n"]) == [2, 0, 1, 2]
    assert out["mean"].iloc[0] == pytest.approx(0.6)
    assert math.isnan(out["mean"].iloc[1])  # a group of unfinished runs stays, as missing
    # two values 0.6 +- 0.1: sd = 0.1 * sqrt(2), sem = 0.1
    assert out["ci_high"].iloc[3] == pytest.approx(0.7 + T_975_1 * 0.1)


def test_summarize_single_key_and_other_value():
    frame = pd.DataFrame({"lr": [0.1, 0.01, 0.1], "train_acc": [0.2, 0.4, 0.6]})
    out = summarize(frame, ["lr"], value="train_acc")
    assert list(out["lr"]) == [0.01, 0.1]
    assert list(out["mean"]) == pytest.approx([0.4, 0.4])
    assert list(out["n"]) == [1, 2]


def test_summarize_empty_frame():
    out = summarize(pd.DataFrame({"depth": [], "test_acc": []}), ["depth"])
    assert out.empty
    assert list(out.columns) == ["depth", "mean", "ci_low", "ci_high", "n"]


def test_paired_matches_scipys_paired_t_test():
    from scipy import stats as scipy_stats

    a, b = [0.71, 0.74, 0.70, 0.73], [0.70, 0.72, 0.69, 0.70]
    mean, low, high, n, p = paired(np.subtract(a, b))
    assert n == 4 and mean == pytest.approx(0.0175)
    assert p == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert (low, high) == pytest.approx(mean_ci(np.subtract(a, b))[1:3])


def test_paired_needs_two_and_equal_differences_are_tested_exactly():
    """Equal differences leave the t statistic undefined; the exact sign-flip test gives what
    three seeds can carry: p = 2 / 2**3, never 0."""
    from ablate.stats import paired_test

    mean, low, high, n, p = paired([0.02])
    assert (mean, n) == (0.02, 1) and all(math.isnan(v) for v in (low, high, p))
    assert paired([0.02, 0.02, 0.02])[3:] == (3, 0.25)
    assert paired([0.0, 0.0])[4] == 1.0
    t = paired_test([0.02, 0.02, 0.02])
    assert t.test == "exact sign-flip" and t.floor == 0.25 and math.isnan(t.low)
    assert paired_test([0.5 - 0.7, 0.52 - 0.72, 0.51 - 0.71]).test == "exact sign-flip"  # equal up to rounding


def test_sign_flip_is_the_exact_sign_test_for_0_1_differences():
    """Paired 0/1 outcomes: 5 discordant pairs all one way, 2 concordant (difference 0): the
    exact sign test (McNemar's) gives 2 * 0.5**5 = 0.0625, concordant pairs change nothing."""
    from scipy import stats as scipy_stats

    from ablate.stats import paired_test, sign_flip

    d = [1, 1, 1, 1, 1, 0, 0]
    assert paired_test(d, exact=True).p == pytest.approx(scipy_stats.binomtest(5, 5).pvalue)
    assert paired_test(d, exact=True).floor == pytest.approx(0.0625)
    above, below = sign_flip([1, 1, -1, 1, 0])
    assert above == pytest.approx(scipy_stats.binomtest(3, 4, alternative="greater").pvalue)
    assert below == pytest.approx(scipy_stats.binomtest(3, 4, alternative="less").pvalue)


def test_sign_flip_enumerates_every_sign_vector():
    from ablate.stats import sign_flip

    d = np.array([0.3, -0.1, 0.2, 0.25])
    sums = [np.dot(s, d) for s in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)]
    assert sign_flip(d)[0] == pytest.approx(np.mean(np.array(sums) >= d.sum() - 1e-12))
    big = sign_flip(np.full(20, 0.1))  # past enumeration: sampled with a fixed seed, reproducible
    assert big == sign_flip(np.full(20, 0.1)) and big[0] < 1e-4


def test_paired_test_against_a_bound_is_the_shifted_t_test():
    from scipy import stats as scipy_stats

    from ablate.stats import paired_test

    d = [0.012, 0.018, 0.009, 0.015]
    t = paired_test(d, bound=0.01)
    assert t.p_above == pytest.approx(scipy_stats.ttest_1samp(d, 0.01, alternative="greater").pvalue)
    assert t.p_below == pytest.approx(scipy_stats.ttest_1samp(d, 0.01, alternative="less").pvalue)
    assert t.two_sided("above") == pytest.approx(2 * t.p_above)


def test_holm_matches_its_definition():
    from ablate.stats import holm

    # sorted 0.01, 0.03, 0.04: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    out = holm([0.5, float("nan"), 0.9])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_summarize_keeps_a_group_whose_key_is_missing():
    # Runs recorded before a config key existed have no value for it: they are a group too.
    frame = pd.DataFrame(
        {
            "act": ["relu", None, "gelu", None, "relu"],
            "test_acc": [0.5, 0.6, 0.7, 0.8, 0.7],
        }
    )
    out = summarize(frame, ["act"])
    assert list(out["act"].iloc[:2]) == ["gelu", "relu"] and pd.isna(out["act"].iloc[2])  # missing sorts last
    assert list(out["n"]) == [1, 2, 2]
    assert list(out["mean"]) == pytest.approx([0.7, 0.6, 0.7])
    assert out["n"].sum() == len(frame)  # no run dropped


def test_summarize_keeps_missing_keys_among_several():
    frame = pd.DataFrame({"depth": [1, 1, 2, 2], "lr": [0.1, np.nan, 0.1, np.nan], "test_acc": [0.1, 0.2, 0.3, 0.4]})
    out = summarize(frame, ["depth", "lr"])
    assert len(out) == 4 and list(out["n"]) == [1, 1, 1, 1]
    assert list(out["mean"]) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert out["lr"].isna().tolist() == [False, True, False, True]


def test_values_read_from_a_database_with_nulls_count_as_missing():
    # A column with NULLs can arrive as Python objects: None, not NaN.
    values = pd.Series([0.5, None, 0.7], dtype=object)
    assert mean_ci(values) == pytest.approx(mean_ci([0.5, 0.7]))

    assert paired(pd.Series([0.02, None, 0.03, 0.025], dtype=object)) == pytest.approx(paired([0.02, 0.03, 0.025]))


def test_paired_interval_follows_the_level():

    d = [0.02, 0.03, 0.025, 0.01]
    assert paired(d, level=0.8)[1:3] == pytest.approx(mean_ci(d, level=0.8)[1:3])
    assert paired(d, level=0.8)[1] > paired(d)[1]  # narrower than the 95% one


def test_summarize_counts_are_integers():
    frame = pd.DataFrame({"depth": [1, 1, 2], "test_acc": [0.5, 0.6, np.nan]})
    out = summarize(frame, ["depth"])
    assert pd.api.types.is_integer_dtype(out["n"]) and list(out["n"]) == [2, 0]
