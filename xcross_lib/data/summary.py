"""Table-1 figures of the domains, and the counts that SOURCE.md states for the shared data."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from .domain import Domain
from .paths import find_data_dir

COUNT_COLUMNS = ("users", "items", "interactions")


def summary_table(domains: Sequence[Domain]) -> pd.DataFrame:
    """One row per domain: users, items, interactions, density, sequence lengths."""
    return pd.DataFrame([d.summary() for d in domains])


def source_counts(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The users/items/interactions table of the data folder's SOURCE.md (empty if absent).

    Rows look like `| Tools | 8,769 + 2,193 = 10,962 | 5,820 | 66,164 | 5-14 |`.
    """
    path = Path(find_data_dir(data_dir)) / "SOURCE.md"
    if not path.is_file():
        return pd.DataFrame(columns=["domain", *COUNT_COLUMNS])
    number = lambda s: int(s.replace(",", "").strip())  # noqa: E731
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"[0-9,]+", cells[2]) and re.fullmatch(r"[0-9,]+", cells[3]):
            users = number(cells[1].split("=")[-1])
            rows.append({"domain": cells[0], "users": users, "items": number(cells[2]), "interactions": number(cells[3])})
    return pd.DataFrame(rows)


def compare_counts(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Our counts beside the reference's, with a `matches` column per domain: True or False, or None
    for a domain the reference does not list (a domain of your own)."""
    merged = summary[["domain", *COUNT_COLUMNS]].merge(reference, on="domain", how="left", suffixes=("", "_source"))
    merged["matches"] = pd.Series([
        None if pd.isna(row["users_source"]) else all(row[c] == row[f"{c}_source"] for c in COUNT_COLUMNS)
        for _, row in merged.iterrows()
    ], dtype=object)
    return merged
