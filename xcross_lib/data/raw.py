"""From the raw Amazon 2018 files to sequences in the shared format (DESIGN.md section 2).

Reviews: JSON lines with `reviewerID`, `asin`, `unixReviewTime`. Metadata: JSON lines with `asin`
and `title`. Either plain or gzip. Steps, in order:
  1. drop reviews of items without a title (a prompt needs one);
  2. k-core (k = 5), repeated until no user or item has fewer than k interactions;
  3. one random interaction per user and day (UTC), seeded;
  4. keep users with 5 to 15 unique items, interactions in time order;
  5. titles cut to their first 8 words.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..errors import DataError
from ..provenance import write_json_atomic

SECONDS_PER_DAY = 86_400


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Records of a JSON-lines file, plain or gzip (found by its magic bytes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {number}: malformed JSON ({e.msg}, column {e.colno}).") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {number}: expected a JSON object, found {type(record).__name__}.")
                yield record
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({e}). Fix: download it again.") from None


def read_reviews(path: str | os.PathLike) -> pd.DataFrame:
    """Columns user, item, time (unix seconds)."""
    rows = []
    for n, r in enumerate(read_jsonl(path), 1):
        try:
            rows.append((str(r["reviewerID"]), str(r["asin"]), int(r["unixReviewTime"])))
        except KeyError as e:
            raise DataError(f"{path}, record {n}: missing field {e.args[0]!r} (need reviewerID, asin, unixReviewTime).") from None
        except (TypeError, ValueError):
            raise DataError(f"{path}, record {n}: unixReviewTime {r['unixReviewTime']!r} is not an integer.") from None
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def read_titles(path: str | os.PathLike) -> dict[str, str]:
    """{asin: title} of the metadata records that have a non-empty title."""
    titles = {}
    for n, r in enumerate(read_jsonl(path), 1):
        if "asin" not in r:
            raise DataError(f"{path}, record {n}: missing field 'asin'.")
        title = r.get("title")
        if isinstance(title, str) and title.strip():
            titles[str(r["asin"])] = title
    return titles


def k_core(interactions: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until none is left."""
    df = interactions
    while True:
        user_n = df.groupby("user")["item"].transform("size")
        item_n = df.groupby("item")["user"].transform("size")
        keep = (user_n >= k) & (item_n >= k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


def one_per_day(interactions: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One interaction per user and UTC day, chosen at random (seeded)."""
    df = interactions.assign(day=interactions["time"] // SECONDS_PER_DAY)
    order = np.random.default_rng(seed).permutation(len(df))
    picked = df.iloc[order].drop_duplicates(["user", "day"], keep="first")
    return picked.drop(columns="day").sort_values(["user", "time", "item"], kind="stable").reset_index(drop=True)


def cut_title(title: str, words: int = 8) -> str:
    return " ".join(str(title).split()[:words])


def build_sequences(
    reviews: pd.DataFrame,
    titles: dict[str, str],
    *,
    seed: int = 0,
    k: int = 5,
    min_items: int = 5,
    max_items: int = 15,
    title_words: int = 8,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The pipeline above. Returns ({reviewerID: [asin, ...] oldest first}, {asin: cut title})."""
    df = reviews[reviews["item"].isin(titles.keys())]
    df = k_core(df, k)
    df = one_per_day(df, seed)
    unique = df.groupby("user")["item"].transform("nunique")
    df = df[(unique >= min_items) & (unique <= max_items)]
    sequences = {user: list(group["item"]) for user, group in df.groupby("user", sort=True)}
    used = {i for seq in sequences.values() for i in seq}
    return sequences, {asin: cut_title(titles[asin], title_words) for asin in sorted(used)}


def write_shared_format(dest: str | os.PathLike, sequences: dict[str, list[str]], titles: dict[str, str]) -> Path:
    """Write a domain folder that `load_domain` reads: every user in train.json, test.json empty.
    Users are numbered in reviewerID order, items in order of first appearance."""
    dest = Path(dest)
    umap = {user: i for i, user in enumerate(sorted(sequences))}
    smap: dict[str, int] = {}
    for user in sorted(sequences):
        for asin in sequences[user]:
            smap.setdefault(asin, len(smap))
    write_json_atomic(dest / "train.json", {str(umap[u]): [smap[a] for a in seq] for u, seq in sequences.items()})
    write_json_atomic(dest / "test.json", {})
    write_json_atomic(dest / "meta_data.json", {asin: titles[asin] for asin in smap})
    write_json_atomic(dest / "smap.json", smap)
    write_json_atomic(dest / "umap.json", umap)
    return dest


def build_domain(
    reviews_path: str | os.PathLike, meta_path: str | os.PathLike, dest: str | os.PathLike, seed: int = 0, **kwargs
) -> Path:
    """Raw files -> a domain folder of the shared format."""
    sequences, titles = build_sequences(read_reviews(reviews_path), read_titles(meta_path), seed=seed, **kwargs)
    if not sequences:
        raise DataError(f"no user of {reviews_path} survives the 5-core and 5-15 item filters.")
    return write_shared_format(dest, sequences, titles)
