"""The paper's studies over many runs: Table 3 (limited data) and the section 4.6 regression.

Plain functions over DataFrames, so that a notebook passes its results in and shows what comes out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import paired_ttest


def size_summary(per_user: pd.DataFrame, metric: str = "hit@1") -> pd.DataFrame:
    """Mean, standard deviation and range of the per-run metric (percent) per model and size.
    per_user: one row per (model, size, subset, user) with the metric per user (0..1)."""
    runs = per_user.groupby(["model", "size", "subset"])[metric].mean().mul(100).rename(metric).reset_index()
    return (runs.groupby(["model", "size"])[metric].agg(["mean", "std", "min", "max", "count"])
            .rename(columns={"count": "subsets"}).reset_index())


def table3(per_user: pd.DataFrame, reference: float, model: str = "X-Cross", baseline: str = "LoRA",
           metric: str = "hit@1", alpha: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """The paper's Table 3 rule on limited-data results.

    per_user: rows (model, size, subset, user, metric), metric per user in 0..1; reference: the
    best zero-shot source's metric in percent on the same test users.
    Per size, each user's metric is averaged over the subsets and `model` is compared with
    `baseline` by a two-tailed paired t-test over users. Returns the per-size table and:
    - largest_size_significant: the largest size where `model` is better than `baseline` with p < alpha;
    - smallest_size_beating_reference[m]: the smallest size where m's mean exceeds `reference`;
    - saving_percent: 100 * (1 - model's smallest size / baseline's smallest size), the share of
      target data that `model` saves to reach the reference (None when either never does)."""
    rows = []
    for size, group in per_user.groupby("size"):
        means = {m: g.groupby("user", as_index=False)[metric].mean() for m, g in group.groupby("model")}
        test = paired_ttest(means[model], means[baseline], metric)
        rows.append({"size": size, f"{model}": 100 * test.mean_a, f"{baseline}": 100 * test.mean_b,
                     "difference": 100 * test.mean_difference, "p": test.p_value,
                     f"{model} better (p < {alpha})": bool(test.mean_difference > 0 and test.p_value < alpha)})
    table = pd.DataFrame(rows).sort_values("size").reset_index(drop=True)
    better = table.loc[table[f"{model} better (p < {alpha})"], "size"]
    smallest = {}
    for m in (model, baseline):
        beating = table.loc[table[m] > reference, "size"]
        smallest[m] = int(beating.min()) if len(beating) else None
    saving = (100 * (1 - smallest[model] / smallest[baseline])
              if smallest[model] is not None and smallest[baseline] is not None else None)
    return table, {"largest_size_significant": int(better.max()) if len(better) else None,
                   "smallest_size_beating_reference": smallest, "saving_percent": saving, "reference": reference}


def convergence_ols(runs: pd.DataFrame, accuracy: str = "hit@1",
                    predictors: tuple[str, ...] = ("length_mean", "length_std")):
    """Section 4.6: OLS of each run's accuracy on the mean and standard deviation of its training
    prompts' lengths (tokens). Returns the fitted statsmodels results (summary(), rsquared, params,
    conf_int(), pvalues)."""
    import statsmodels.formula.api as smf

    missing = [c for c in (accuracy, *predictors) if c not in runs.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the runs table; it has {list(runs.columns)}")
    if len(runs) <= len(predictors) + 1:
        raise ValueError(f"{len(runs)} runs cannot fit {len(predictors)} predictors and an intercept")
    frame = runs.rename(columns={accuracy: "accuracy"})
    return smf.ols("accuracy ~ " + " + ".join(predictors), data=frame).fit()


def prompt_length_stats(lengths: np.ndarray) -> dict:
    """Mean and standard deviation (population) of a run's training prompt lengths."""
    lengths = np.asarray(lengths, dtype=float)
    return {"length_mean": float(lengths.mean()), "length_std": float(lengths.std())}
