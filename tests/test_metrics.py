import math

import numpy as np
import pandas as pd
import pytest

from xcross_lib.metrics import minimum_detectable_difference, paired_ttest, per_user_metrics, summarize, target_ranks

pytestmark = pytest.mark.unit


def test_ranks_break_ties_against_the_target():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # target 0 strictly best -> rank 1
            [0.5, 0.5, 0.1, 0.0],  # target 1 ties with column 0 -> rank 2
            [0.2, 0.2, 0.2, 0.2],  # all tied -> last, rank 4
            [0.1, 0.4, 0.3, 0.2],  # target 3 (0.2): beaten by 0.4 and 0.3 -> rank 3
        ]
    )
    assert target_ranks(scores, [0, 1, 2, 3]).tolist() == [1, 2, 4, 3]


def test_per_user_metrics_match_hand_computation():
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [1.0, 1.0, 5.0]])
    frame = per_user_metrics(scores, [0, 2, 0], users=[10, 11, 12])
    # ranks: user 10 -> 1; user 11: target 2.0 beaten by 3.0 -> 2; user 12: target 1.0, >= by 1.0 and 5.0 -> 3
    assert frame["rank"].tolist() == [1, 2, 3]
    assert frame["hit@1"].tolist() == [1.0, 0.0, 0.0]
    assert frame["hit@3"].tolist() == [1.0, 1.0, 1.0]
    assert frame["mrr"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert frame["ndcg@10"].tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(4)])
    means = summarize(frame)
    assert means["hit@1"] == pytest.approx(100 / 3)
    assert means["mrr"] == pytest.approx(100 * (1 + 0.5 + 1 / 3) / 3)
    assert means["n_users"] == 3


def test_rank_beyond_ten_gives_zero_ndcg_and_no_hit():
    scores = np.arange(30, dtype=float)[None, :]  # target 0 is the lowest -> rank 30
    frame = per_user_metrics(scores, [0])
    assert frame.loc[0, "rank"] == 30 and frame.loc[0, "hit@10"] == 0 and frame.loc[0, "ndcg@10"] == 0
    assert frame.loc[0, "mrr"] == pytest.approx(1 / 30)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="one target index per user"):
        target_ranks(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        target_ranks(np.zeros((1, 3)), [3])


def test_paired_ttest_against_hand_computation():
    a = pd.DataFrame({"user": [1, 2, 3, 4], "hit@1": [1.0, 1.0, 0.0, 1.0]})
    b = pd.DataFrame({"user": [4, 3, 2, 1], "hit@1": [0.0, 0.0, 1.0, 0.0]})  # other order
    # differences by user: 1-0, 1-1, 0-0, 1-0 = [1, 0, 0, 1]; mean 0.5, sd (ddof 1) = sqrt(1/3)
    t_hand = 0.5 / (math.sqrt(1 / 3) / 2)
    res = paired_ttest(a, b)
    assert res.n_users == 4 and res.mean_difference == pytest.approx(0.5)
    assert res.t == pytest.approx(t_hand)
    from scipy import stats

    assert res.p_value == pytest.approx(2 * stats.t.sf(t_hand, df=3))
    assert not res.significant
    assert res.sd_difference == pytest.approx(math.sqrt(1 / 3))


def _power_by_hand(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-tailed paired t-test at a true mean difference: the noncentral t's mass beyond
    the critical values (df n - 1, noncentrality difference / (sd / sqrt(n)))."""
    from scipy import stats

    crit, nc = stats.t.ppf(1 - alpha / 2, n - 1), difference / (sd / math.sqrt(n))
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)


def test_minimum_detectable_difference_has_the_asked_power_by_hand():
    rng = np.random.default_rng(0)
    users = np.arange(2193)
    a = pd.DataFrame({"user": users, "mrr": rng.uniform(0, 1, len(users))})
    b = pd.DataFrame({"user": users, "mrr": np.clip(a["mrr"] + rng.normal(0, 0.2, len(users)), 0, 1)})
    res = paired_ttest(a, b, "mrr")
    sd = np.std(a["mrr"] - b["mrr"], ddof=1)
    mdd = minimum_detectable_difference(res)
    assert _power_by_hand(mdd, sd, len(users)) == pytest.approx(0.8, abs=1e-4)
    # for many users close to the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) = 2.80 sd / sqrt(n)
    assert mdd == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(len(users)), rel=2e-3)
    # more power or a stricter level needs a larger difference; four times the users, about half
    assert minimum_detectable_difference(res, power=0.9) > mdd < minimum_detectable_difference(res, alpha=0.01)
    half = paired_ttest(a.iloc[:548], b.iloc[:548], "mrr")
    assert minimum_detectable_difference(half) / half.sd_difference == pytest.approx(
        2 * mdd / res.sd_difference, rel=0.01)
    # identical models: nothing varies, any difference would be seen
    assert minimum_detectable_difference(paired_ttest(a, a.copy(), "mrr")) == 0.0


def test_paired_ttest_needs_the_same_users_and_handles_identical_models():
    a = pd.DataFrame({"user": [1, 2], "mrr": [0.5, 1.0]})
    with pytest.raises(ValueError, match="different users"):
        paired_ttest(a, pd.DataFrame({"user": [1, 3], "mrr": [0.5, 1.0]}), "mrr")
    same = paired_ttest(a, a.copy(), "mrr")
    assert same.t == 0 and same.p_value == 1.0


@pytest.mark.unit
def test_top_sources_break_a_hit_at_1_tie_by_mrr_whatever_the_row_order():
    from xcross_lib.experiments import ZeroShotResults
    from xcross_lib.metrics import _metrics_of_ranks

    # target T; A and B tie on Hit@1 (1 of 3 users first), B ranks its misses higher (better MRR); C has 0 Hit@1
    ranks = {"A": [1, 9, 9], "B": [1, 2, 2], "C": [2, 2, 2], "T": [1, 1, 1]}
    frames = {(s, "T", "validation"): _metrics_of_ranks(np.array(r)) for s, r in ranks.items()}
    for order in (list(frames), list(reversed(frames))):
        results = ZeroShotResults({key: frames[key] for key in order})
        assert results.top_sources(k=2) == {"T": ("B", "A")}  # the target's own model is never its source
