"""The integrator's scaling factors: static plots, and an ipywidgets explorer over them.

Input: the long frame of `experiments.factor_table` (user, pass, point, i, j, alpha, beta) and
the run's source names.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


PASS_NAMES = {0: "history / prompt", 1: "candidates"}  # factor_table's passes


def with_pairs(factors: pd.DataFrame, source_names: Sequence[str]) -> pd.DataFrame:
    out = factors.copy()
    out["pair"] = [f"{source_names[i]} <- {source_names[j]}" for i, j in zip(out["i"], out["j"])]
    out["layer"] = out["point"].str.replace("encoder_layer_", "", regex=False)
    return out


def plot_factor_means(factors: pd.DataFrame, source_names: Sequence[str], axes=None):
    """Heatmaps of mean alpha and beta per pair (rows) and integration point (columns);
    blue cells are negative factors."""
    f = with_pairs(factors, source_names)
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(12, 0.6 * f["pair"].nunique() + 2))[1]
    for ax, what in zip(axes, ("alpha", "beta")):
        table = f.groupby(["pair", "layer"])[what].mean().unstack("layer")
        sns.heatmap(table, center=0, cmap="RdBu_r", annot=True, fmt=".3f", ax=ax)
        ax.set(title=f"mean {what} over examples", xlabel="integrated layer / point", ylabel="")
    return axes


def plot_factor_distributions(factors: pd.DataFrame, source_names: Sequence[str], what: str = "alpha", ax=None):
    """Per integration point, the spread of the per-example factor, one box per pair."""
    f = with_pairs(factors, source_names)
    ax = ax or plt.subplots(figsize=(12, 3.5))[1]
    sns.boxplot(f, x="layer", y=what, hue="pair", ax=ax, fliersize=1)
    ax.axhline(0, c="gray", lw=0.8)
    ax.set(title=f"{what} per example (share below zero: {(f[what] < 0).mean():.0%})")
    return ax


def negative_share(factors: pd.DataFrame) -> pd.DataFrame:
    """Per integration point, the share of per-example factors below zero."""
    return factors.groupby("point")[["alpha", "beta"]].agg(lambda x: (x < 0).mean())


def factor_explorer(factors: pd.DataFrame, source_names: Sequence[str]):
    """Dropdowns for example, integration point and pair; shows the chosen example's factors at
    every point beside the distribution over examples."""
    import ipywidgets as widgets
    from IPython.display import display

    f = with_pairs(factors, source_names)
    example = widgets.Dropdown(options=sorted(f["user"].unique()), description="example")
    point = widgets.Dropdown(options=sorted(f["layer"].unique(), key=lambda x: (len(x), x)), description="layer")
    pair = widgets.Dropdown(options=sorted(f["pair"].unique()), description="pair")
    out = widgets.Output()

    def render(*_):
        out.clear_output(wait=True)
        with out:
            fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
            one = f[(f["user"] == example.value) & (f["pair"] == pair.value)]
            # one line per factor and encoder pass (two towers: the history's pass and the candidates')
            lines = one.melt(id_vars=["layer", "pass"], value_vars=["alpha", "beta"], var_name="factor")
            lines["line"] = lines["factor"] + (" (" + lines["pass"].map(PASS_NAMES) + ")" if one["pass"].nunique() > 1 else "")
            sns.lineplot(lines, x="layer", y="value", hue="line", marker="o", ax=axes[0])
            axes[0].set(title=f"example {example.value}: {pair.value}", ylabel="factor")
            axes[0].axhline(0, c="gray", lw=0.8)
            here = f[(f["layer"] == point.value) & (f["pair"] == pair.value)]
            sns.histplot(here.melt(value_vars=["alpha", "beta"]), x="value", hue="variable", ax=axes[1], bins=30)
            axes[1].axvline(0, c="gray", lw=0.8)
            axes[1].set(title=f"layer {point.value}, all examples")
            plt.show()

    for w in (example, point, pair):
        w.observe(render, names="value")
    render()
    box = widgets.VBox([widgets.HBox([example, point, pair]), out])
    display(box)
    return box
