"""Plots shared by the notebooks (seaborn over tidy frames)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .data.domain import Domain


def sequence_lengths(domains: Sequence[Domain]) -> pd.DataFrame:
    return pd.DataFrame(
        [(d.name, len(s)) for d in domains for s in d.sequences.values()], columns=["domain", "length"]
    )


def item_popularity_ranks(domains: Sequence[Domain]) -> pd.DataFrame:
    """Per domain, items ranked by interaction count (rank 1 = most popular)."""
    frames = []
    for d in domains:
        counts = np.bincount(np.concatenate([np.asarray(s) for s in d.sequences.values()]))
        counts = np.sort(counts[counts > 0])[::-1]
        frames.append(pd.DataFrame({"domain": d.name, "rank": np.arange(1, len(counts) + 1), "interactions": counts}))
    return pd.concat(frames, ignore_index=True)


def plot_sequence_lengths(domains: Sequence[Domain], ax=None):
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    frame = sequence_lengths(domains)
    sns.histplot(frame, x="length", hue="domain", discrete=True, stat="percent", common_norm=False,
                 multiple="dodge", shrink=0.8, ax=ax)
    ax.set(xlabel="items per user (history + target)", ylabel="% of users", title="Sequence lengths")
    return ax


def plot_item_popularity(domains: Sequence[Domain], ax=None):
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    sns.lineplot(item_popularity_ranks(domains), x="rank", y="interactions", hue="domain", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="item rank by popularity", ylabel="interactions",
           title="Item popularity (long tail)")
    return ax


def plot_learning_curve(curve: pd.DataFrame, validation: pd.DataFrame, n_candidates: int,
                        reference_hit1: dict[str, float] | None = None, axes=None, metric: str = "hit@1",
                        best_step: int | None = None):
    """Training loss per logged step (uniform-guess level ln C dashed) and the validation metric per
    validation point (step 0: the untrained start), the kept state marked; references dashed."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(12, 3.6))[1]
    ax = axes[0]
    ax.plot(curve["step"], curve["loss"], c="C0", alpha=0.35, lw=1, label="loss per logged window")
    window = max(1, len(curve) // 10)
    ax.plot(curve["step"], curve["loss"].rolling(window, min_periods=1).mean(), c="C0", lw=2,
            label=f"rolling mean of {window}")
    ax.axhline(np.log(n_candidates), ls="--", c="gray", label=f"ln {n_candidates} (uniform)")
    ax.set(title="Training loss", xlabel="optimizer step", ylabel="cross-entropy")
    ax.legend()
    ax = axes[1]
    if len(validation):
        ax.plot(validation["step"], validation[metric], marker="o", c="C0", label="this model")
        kept = validation[validation["step"] == best_step]
        if len(kept):
            ax.plot(kept["step"], kept[metric], marker="*", ms=14, c="C3", ls="", label="kept (best on validation)")
    for k, (name, value) in enumerate((reference_hit1 or {}).items()):
        ax.axhline(value, ls="--", c=f"C{k + 1}", label=name)
    label = "Hit@1" if metric == "hit@1" else metric.upper()
    ax.set(title=f"Validation {label}", xlabel="optimizer step", ylabel=f"{label} (%)")
    ax.legend()
    return axes


def plot_matrix(matrix: pd.DataFrame, title: str, ax=None, fmt: str = ".1f"):
    """A sources x targets heatmap."""
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    sns.heatmap(matrix, annot=True, fmt=fmt, cmap="viridis", ax=ax, cbar_kws={"label": title})
    ax.set(title=title, xlabel="target domain", ylabel="source model")
    return ax


def plot_limited_data(summary: pd.DataFrame, reference: float | None = None, reference_name: str = "best zero-shot source",
                      metric: str = "Hit@1 (%)", ax=None):
    """Figure 3: mean over subsets per training size and model, the band from the worst to the best
    subset, and the reference (the best zero-shot source) as a dashed line."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for k, (model, group) in enumerate(summary.sort_values("size").groupby("model", sort=False)):
        ax.plot(group["size"], group["mean"], marker="o", c=f"C{k}", label=f"{model} (mean)")
        ax.fill_between(group["size"], group["min"], group["max"], color=f"C{k}", alpha=0.2, label=f"{model} (range)")
    if reference is not None:
        ax.axhline(reference, ls="--", c="gray", label=reference_name)
    sizes = sorted(summary["size"].unique())
    ax.set(xscale="log", xlabel="target training users", ylabel=metric, title="Limited target data")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.legend(fontsize=8)
    return ax


def plot_curve_points(table: pd.DataFrame, metric: str = "mrr", references: Sequence[str] = (), ax=None):
    """The learning curve: each trained model's test metric against its training users (log scale),
    the size-free rows (sources alone, the untrained average, ...) as dashed lines."""
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    points = table[table["size"].notna()].sort_values("size")
    for k, (model, group) in enumerate(points.groupby("model", sort=True)):
        ax.plot(group["size"].astype(float), group[metric], marker="o", c=f"C{k}", label=model)
    for k, name in enumerate(references):
        row = table[(table["model"] == name) & table["size"].isna()]
        if len(row):
            ax.axhline(float(row[metric].iloc[0]), ls="--", lw=1, c=f"C{k + 4}", label=name)
    label = "Hit@1" if metric == "hit@1" else metric.upper()
    ax.set(xscale="log", xlabel="target training users", ylabel=f"test {label} (%)", title="Learning curve")
    ax.legend(fontsize=8)
    return ax


def plot_learning_curves(losses: pd.DataFrame, validations: pd.DataFrame, metrics: str | Sequence[str] = ("mrr", "hit@1"),
                         n_candidates: int = 30):
    """Training loss and validation metrics over optimizer steps for every point of a learning
    curve: one row per model (the loss, then one panel per metric), one colour per size and one line
    per point (the frames of `learning_curve.validation_curves`), the kept states of the final
    points starred; the points of a validation-only search dotted, unstarred. Returns the axes,
    shape (models, 1 + metrics)."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    models = sorted(validations["model"].unique()) if len(validations) else []
    n_rows, n_cols = max(1, len(models)), 1 + len(metrics)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.5 * n_cols, 3.4 * n_rows), squeeze=False)
    for row, model in zip(axes, models):
        rows = validations[validations["model"] == model]
        colour = {size: f"C{k}" for k, size in enumerate(sorted(rows["size"].unique()))}
        for (size, point), group in rows.groupby(["size", "point"], sort=True):
            search = bool(group["search"].iloc[0])
            style = {"c": colour[size], "ls": ":" if search else "-", "lw": 1 if search else 1.5,
                     "label": f"{size} users" + (" (search)" if search else "")}
            loss = losses[(losses["model"] == model) & (losses["point"] == point)]
            if len(loss):
                window = max(1, len(loss) // 10)
                row[0].plot(loss["step"], loss["loss"].rolling(window, min_periods=1).mean(), **style)
            kept = group[group["kept"]]
            for ax, metric in zip(row[1:], metrics):
                ax.plot(group["step"], group[metric], marker="o", ms=2 if search else 3, **style)
                if not search:
                    ax.plot(kept["step"], kept[metric], marker="*", ms=12, c=colour[size], ls="")
        row[0].axhline(np.log(n_candidates), ls="--", c="gray", lw=1, label=f"ln {n_candidates}")
        row[0].set(title=f"{model}: training loss (rolling mean)", xlabel="optimizer step", ylabel="cross-entropy")
        for ax, metric in zip(row[1:], metrics):
            label = "Hit@1" if metric == "hit@1" else metric.upper()
            ax.set(title=f"{model}: validation {label} (kept starred)", xlabel="optimizer step", ylabel=f"{label} (%)")
        for ax in row:
            by_label = dict(zip(*reversed(ax.get_legend_handles_labels())))  # a search's points: one entry
            ax.legend(by_label.values(), by_label.keys(), fontsize=8)
    fig.tight_layout()
    return axes


def plot_classic_curves(curves: pd.DataFrame, best: dict | None = None):
    """The classic models' training loss and validation MRR (percent, 30 candidates) per epoch, one
    line per model, S3-Rec's pre-training left out; the kept epoch of each model starred."""
    train = curves[curves["stage"] == "train"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for k, (model, group) in enumerate(train.groupby("model", sort=False)):
        axes[0].plot(group["epoch"], group["train_loss"], c=f"C{k}", label=model)
        axes[1].plot(group["epoch"], 100 * group["validation_mrr"], c=f"C{k}", label=model)
        if best and model in best:
            kept = group[group["epoch"] == best[model]]
            axes[1].scatter(kept["epoch"], 100 * kept["validation_mrr"], marker="*", s=140, c=f"C{k}", zorder=3)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation MRR (%)", title="validation MRR, 30 candidates (kept epoch starred)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_sampled_vs_full(table: pd.DataFrame, metric: str = "mrr"):
    """Each model's sampled (30 candidates) and full-ranking metric side by side, in the sampled order."""
    t = table.sort_values(f"sampled {metric}", ascending=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(t) + 1.5), sharey=True)
    axes[0].barh(t["model"], t[f"sampled {metric}"], color="C0")
    axes[1].barh(t["model"], t[f"full {metric}"], color="C1")
    axes[0].set(xlabel=f"{metric.upper()} (%), 30 sampled candidates")
    axes[1].set(xlabel=f"{metric.upper()} (%), all items")
    fig.tight_layout()
    return fig


def plot_place_changes(table: pd.DataFrame, metric: str = "mrr", ax=None):
    """Each model's place by the sampled metric (left) and by the full-ranking one (right), joined."""
    ax = ax or plt.gca()
    sampled = table[f"sampled {metric}"].rank(ascending=False, method="first")
    full = table[f"full {metric}"].rank(ascending=False, method="first")
    for k, (name, a, b) in enumerate(zip(table["model"], sampled, full)):
        ax.plot([0, 1], [a, b], marker="o", color=f"C{k % 10}")
        ax.annotate(name, (0, a), xytext=(-6, 0), textcoords="offset points", ha="right", va="center", fontsize=8)
        ax.annotate(name, (1, b), xytext=(6, 0), textcoords="offset points", ha="left", va="center", fontsize=8)
    ax.set(xticks=[0, 1], xticklabels=["30 candidates", "all items"], xlim=(-0.8, 1.8), ylabel=f"place by {metric.upper()}")
    ax.invert_yaxis()
    return ax

