"""Ranking metrics over candidate lists, per user, and paired significance tests.

Input: a score matrix (users x candidates) and each user's target column. The rank of the target
is 1 + the number of other candidates scoring >= the target: ties count against the target, so a
model that scores everything alike ranks the target last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("hit@1", "hit@3", "hit@10", "mrr", "ndcg@10")


def target_ranks(scores: np.ndarray, target_index: Sequence[int]) -> np.ndarray:
    """1-based rank of each user's target among its candidates, ties broken against the target."""
    scores = np.asarray(scores, dtype=np.float64)
    target_index = np.asarray(target_index, dtype=np.int64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be users x candidates, got shape {scores.shape}")
    if target_index.shape != (scores.shape[0],):
        raise ValueError(f"need one target index per user: {target_index.shape} vs {scores.shape[0]} users")
    if ((target_index < 0) | (target_index >= scores.shape[1])).any():
        raise ValueError(f"target indices must lie in [0, {scores.shape[1]})")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).any(axis=1).sum())} user(s) have NaN scores")
    rows = np.arange(scores.shape[0])
    target = scores[rows, target_index][:, None]
    at_least = (scores >= target).sum(axis=1)  # counts the target itself once
    return at_least.astype(np.int64)


def per_user_metrics(scores: np.ndarray, target_index: Sequence[int], users: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per user: rank, hit@1, hit@3, hit@10, mrr, ndcg@10 (fractions, not percent)."""
    return _metrics_of_ranks(target_ranks(scores, target_index), users)


def _metrics_of_ranks(ranks: np.ndarray, users: Sequence[int] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user": np.arange(len(ranks)) if users is None else np.asarray(users),
            "rank": ranks,
            "hit@1": (ranks <= 1).astype(float),
            "hit@3": (ranks <= 3).astype(float),
            "hit@10": (ranks <= 10).astype(float),
            "mrr": 1.0 / ranks,
            "ndcg@10": np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0),
        }
    )
    return frame


def summarize(per_user: pd.DataFrame, percent: bool = True) -> pd.Series:
    """Mean of each metric over users (in percent by default), with n_users."""
    means = per_user[list(METRICS)].mean() * (100.0 if percent else 1.0)
    means["n_users"] = len(per_user)
    return means


def standard_error(per_user: pd.DataFrame, metric: str = "hit@1", percent: bool = True) -> float:
    return float(per_user[metric].std(ddof=1) / np.sqrt(len(per_user)) * (100.0 if percent else 1.0))


@dataclass(frozen=True)
class PairedTest:
    metric: str
    n_users: int
    mean_a: float
    mean_b: float
    mean_difference: float  # a - b
    t: float
    p_value: float
    sd_difference: float = float("nan")  # per-user standard deviation of a - b (ddof 1)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def paired_ttest(a: pd.DataFrame, b: pd.DataFrame, metric: str = "hit@1") -> PairedTest:
    """Two-tailed paired t-test of model a against model b on the users they share.

    Both frames are per-user metric frames (columns user and the metric). Raises if they share
    no user or do not cover the same users (a comparison must score the same test users).
    """
    if metric not in a.columns or metric not in b.columns:
        raise KeyError(f"metric {metric!r} not in both frames; known: {', '.join(METRICS)}")
    if set(a["user"]) != set(b["user"]):
        only_a, only_b = len(set(a["user"]) - set(b["user"])), len(set(b["user"]) - set(a["user"]))
        raise ValueError(f"the two models were scored on different users ({only_a} only in a, {only_b} only in b)")
    merged = a[["user", metric]].merge(b[["user", metric]], on="user", suffixes=("_a", "_b"))
    x, y = merged[f"{metric}_a"].to_numpy(), merged[f"{metric}_b"].to_numpy()
    diff = x - y
    if np.allclose(diff, diff[0]):
        # constant difference: the t statistic is undefined (zero variance)
        t, p = (0.0, 1.0) if diff[0] == 0 else (float(np.sign(diff[0]) * np.inf), 0.0)
    else:
        res = stats.ttest_rel(x, y)
        t, p = float(res.statistic), float(res.pvalue)
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return PairedTest(metric, len(merged), float(x.mean()), float(y.mean()), float(diff.mean()), t, p, sd)


def minimum_detectable_difference(test: PairedTest, alpha: float = 0.05, power: float = 0.8) -> float:
    """The mean per-user difference that a two-tailed paired t-test over the same users detects with
    probability `power` at level `alpha`, given the pair's per-user spread (`test.sd_difference`), in
    the metric's units (statsmodels' TTestPower: the paired test is a one-sample test of a - b).
    What a non-significant comparison could have seen: a difference below it is likely missed."""
    from statsmodels.stats.power import TTestPower

    if test.n_users < 2 or not np.isfinite(test.sd_difference):
        return float("nan")
    if test.sd_difference == 0:
        return 0.0
    effect = TTestPower().solve_power(effect_size=None, nobs=test.n_users, alpha=alpha, power=power,
                                      alternative="two-sided")
    return float(effect * test.sd_difference)


def full_ranking_ranks(scores: np.ndarray, targets: Sequence[int], histories: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of each user's target among all items (the columns of `scores`, users x items),
    the user's history items left out (the target never is, even where the history repeats it),
    ties broken against the target as in `target_ranks`."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],) or len(histories) != scores.shape[0]:
        raise ValueError(f"need users x items scores and one target and history per user: {scores.shape}, "
                         f"{targets.shape}, {len(histories)}")
    if ((targets < 0) | (targets >= scores.shape[1])).any():
        raise ValueError(f"target ids must lie in [0, {scores.shape[1]})")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).any(axis=1).sum())} user(s) have NaN scores")
    rows = np.arange(scores.shape[0])
    target_score = scores[rows, targets]
    at_least = (scores >= target_score[:, None]).sum(axis=1)  # the target itself included
    for r, (history, target) in enumerate(zip(histories, targets)):
        seen = np.unique(np.asarray([i for i in history if i != target], dtype=np.int64))
        at_least[r] -= int((scores[r, seen] >= target_score[r]).sum())
    return at_least.astype(np.int64)


def full_ranking_per_user(scores: np.ndarray, targets: Sequence[int], histories: Sequence[Sequence[int]],
                          users: Sequence[int] | None = None) -> pd.DataFrame:
    """As `per_user_metrics`, with ranks over all items (`full_ranking_ranks`)."""
    ranks = full_ranking_ranks(scores, targets, histories)
    return _metrics_of_ranks(ranks, users)
