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
