"""Table 3's rule on made-up results with a known answer; the section 4.6 OLS against a hand fit."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xcross_lib.studies import convergence_ols, shipped_per_user, size_summary, table3

pytestmark = pytest.mark.unit


def made_results(hit_rates: dict, n_users: int = 400, subsets: int = 5) -> pd.DataFrame:
    """Per-user Hit@1 with exactly the given rate per (model, size), same in every subset."""
    rows = []
    for (model, size), rate in hit_rates.items():
        hits = np.zeros(n_users)
        hits[: int(round(rate * n_users))] = 1
        for subset in range(subsets):
            # the same users hit in every subset, shifted per model so the pairing is not trivial
            order = np.roll(hits, 7 * subset if model == "LoRA" else 0)
            rows += [(model, size, subset, u, order[u]) for u in range(n_users)]
    return pd.DataFrame(rows, columns=["model", "size", "subset", "user", "hit@1"])


def test_table3_rule_on_a_known_answer():
    # X-Cross: 10% at 50, 20% at 100, 30% at 200; LoRA: 2% at 50, 8% at 100, 29% at 200. Reference 15%.
    rates = {("X-Cross", 50): 0.10, ("X-Cross", 100): 0.20, ("X-Cross", 200): 0.30,
             ("LoRA", 50): 0.02, ("LoRA", 100): 0.08, ("LoRA", 200): 0.29}
    table, answer = table3(made_results(rates), reference=15.0)
    assert table["size"].tolist() == [50, 100, 200]
    assert table["X-Cross"].round(6).tolist() == [10.0, 20.0, 30.0] and table["LoRA"].round(6).tolist() == [2.0, 8.0, 29.0]
    # 100 users more than LoRA at sizes 50 and 100 (significant); 4 users at 200 (not)
    assert answer["largest_size_significant"] == 100
    assert answer["smallest_size_beating_reference"] == {"X-Cross": 100, "LoRA": 200}
    assert answer["saving_percent"] == pytest.approx(50.0)
    assert table.loc[2, "p"] > 0.05 > table.loc[1, "p"]


def test_table3_tests_each_model_against_the_reference_users():
    """Beside the paper's rule (a mean above the reference's), each model against the best source's
    own per-user results: X-Cross 20% and 30% against a source at 15% on the same 400 users; LoRA 16%."""
    rates = {("X-Cross", 100): 0.20, ("X-Cross", 200): 0.30, ("LoRA", 100): 0.16, ("LoRA", 200): 0.16}
    hits = np.zeros(400)
    hits[:60] = 1  # the source hits the first 60 users (15%): X-Cross's hits contain them
    source = pd.DataFrame({"user": range(400), "hit@1": hits})
    table, answer = table3(made_results(rates), reference=15.0, reference_per_user=source)
    assert answer["smallest_size_beating_reference"] == {"X-Cross": 100, "LoRA": 100}  # means only
    assert answer["smallest_size_significantly_beating_reference"] == {"X-Cross": 100, "LoRA": None}
    # by hand: X-Cross at 100 hits 20 users more than the source and misses none it hits: differences 0/1
    diff = np.r_[np.zeros(80), np.ones(20), np.zeros(300)]
    assert table.loc[0, "p (X-Cross vs reference)"] == pytest.approx(stats.ttest_rel(diff, np.zeros(400)).pvalue)
    assert table.loc[0, "p (LoRA vs reference)"] > 0.05
    with pytest.raises(ValueError, match="different users"):  # the reference must be scored on the same users
        table3(made_results(rates), reference=15.0, reference_per_user=source.head(300))


def test_table3_when_a_model_never_reaches_the_reference():
    rates = {("X-Cross", 50): 0.10, ("LoRA", 50): 0.05}
    _, answer = table3(made_results(rates), reference=50.0)
    assert answer["smallest_size_beating_reference"] == {"X-Cross": None, "LoRA": None}
    assert answer["saving_percent"] is None


def test_shipped_runs_are_read_by_name_and_a_stray_file_is_an_error(tmp_path):
    made_results({("X-Cross", 50): 0.5}, n_users=4, subsets=1).drop(columns=["model", "size", "subset"]).to_parquet(
        tmp_path / "X-Cross-size50-subset3.parquet")
    read = shipped_per_user(tmp_path)
    assert set(zip(read["model"], read["size"], read["subset"])) == {("X-Cross", 50, 3)} and read["hit@1"].sum() == 2
    read.head(1).to_parquet(tmp_path / "LoRA-size3k-subset0.parquet")
    with pytest.raises(ValueError, match="LoRA-size3k-subset0.parquet is not a limited-data run's results"):
        shipped_per_user(tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished limited-data runs"):
        shipped_per_user(tmp_path / "empty")


def test_size_summary_spreads_over_subsets():
    frame = made_results({("X-Cross", 50): 0.10}, n_users=10, subsets=2)
    frame.loc[(frame["subset"] == 1) & (frame["user"] == 5), "hit@1"] = 1  # subset 1: 20%
    summary = size_summary(frame)
    row = summary.iloc[0]
    assert (row["mean"], row["min"], row["max"], row["subsets"]) == (15.0, 10.0, 20.0, 2)
    assert row["std"] == pytest.approx(np.std([10.0, 20.0], ddof=1))


def test_convergence_ols_matches_a_least_squares_fit():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame({"length_mean": rng.uniform(40, 120, 12), "length_std": rng.uniform(5, 30, 12)})
    runs["hit@1"] = 5 + 0.05 * runs["length_mean"] - 0.2 * runs["length_std"] + rng.normal(0, 0.5, 12)
    fit = convergence_ols(runs)
    X = np.column_stack([np.ones(12), runs["length_mean"], runs["length_std"]])
    beta, *_ = np.linalg.lstsq(X, runs["hit@1"].to_numpy(), rcond=None)
    assert np.allclose(fit.params[["Intercept", "length_mean", "length_std"]].to_numpy(), beta)
    residual = runs["hit@1"].to_numpy() - X @ beta
    centered = runs["hit@1"].to_numpy() - runs["hit@1"].mean()
    assert fit.rsquared == pytest.approx(1 - residual @ residual / (centered @ centered))
    # the 95% intervals by hand: beta +- t(0.975, n - 3) * sqrt(diag(s^2 (X'X)^-1))
    s2 = residual @ residual / (12 - 3)
    half = stats.t.ppf(0.975, 12 - 3) * np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    ci = fit.conf_int().loc[["Intercept", "length_mean", "length_std"]].to_numpy()
    assert np.allclose(ci, np.column_stack([beta - half, beta + half]))
    with pytest.raises(ValueError, match="cannot fit"):
        convergence_ols(runs.head(3))


def test_convergence_ols_with_the_model_as_a_fixed_effect_equals_statsmodels_on_dummies():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    runs = pd.DataFrame({"length_mean": rng.uniform(40, 120, 16), "length_std": rng.uniform(5, 30, 16),
                         "model": ["LoRA", "X-Cross"] * 8})
    runs["hit@1"] = 5 + 0.05 * runs["length_mean"] + 3 * (runs["model"] == "X-Cross") + rng.normal(0, 0.5, 16)
    fit = convergence_ols(runs, fixed_effects=("model",))
    X = sm.add_constant(runs[["length_mean", "length_std"]].assign(xcross=(runs["model"] == "X-Cross").astype(float)))
    direct = sm.OLS(runs["hit@1"], X).fit()
    assert fit.params["C(model)[T.X-Cross]"] == pytest.approx(direct.params["xcross"])
    assert fit.params["length_mean"] == pytest.approx(direct.params["length_mean"])
    assert fit.rsquared == pytest.approx(direct.rsquared) and 2 < fit.params["C(model)[T.X-Cross]"] < 4
    with pytest.raises(KeyError, match="seed"):
        convergence_ols(runs, fixed_effects=("seed",))


def test_convergence_ols_with_size_held_fixed_is_the_within_size_slope():
    # accuracy depends on training size only, and the subsets' prompt lengths happen to fall with
    # size: the plain regression credits length with size's effect, the fixed effect does not
    rng = np.random.default_rng(2)
    size = np.repeat([500, 1000, 2000, 3000], 5)
    runs = pd.DataFrame({"size": size, "length_mean": 80 - size / 500 + rng.normal(0, 0.3, 20),
                         "length_std": rng.uniform(15, 25, 20)})
    runs["mrr"] = 18 + size / 1000 + rng.normal(0, 0.1, 20)
    plain = convergence_ols(runs, "mrr")
    assert plain.pvalues["length_mean"] < 0.001 and plain.params["length_mean"] < -0.3
    held = convergence_ols(runs, "mrr", fixed_effects=("size",))
    # Frisch-Waugh-Lovell by hand: demean every variable within its size, then least squares
    within = runs.groupby("size")[["length_mean", "length_std", "mrr"]].transform(lambda c: c - c.mean())
    beta, *_ = np.linalg.lstsq(within[["length_mean", "length_std"]].to_numpy(), within["mrr"].to_numpy(), rcond=None)
    assert np.allclose(held.params[["length_mean", "length_std"]].to_numpy(), beta)
    assert held.pvalues["length_mean"] > 0.05
    # a column with one level adds no term (one study read): the same fit
    same = convergence_ols(runs.assign(study="tools"), "mrr", fixed_effects=("size", "study"))
    assert np.allclose(same.params.to_numpy(), held.params.to_numpy())
