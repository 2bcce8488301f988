"""The evaluation protocol: seeded user sub-sampling, the 3:1:1 user split, candidate lists.

One example per user: the history is the sequence without its last item, the target is the last.
Candidates: the target plus 29 negatives sampled in proportion to item popularity over training
users, never an item of the user's own sequence. Each user's draw is seeded by (seed, user id),
so a user's candidates do not depend on which other users are in the run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..errors import DataError, ParameterError

SPLITS = ("train", "validation", "test")
SPLIT_RATIOS = (3, 1, 1)
N_CANDIDATES = 30

# The paper's user samples per target domain (DESIGN.md section 2).
PAPER_USER_FRACTION = {"Electronics": 0.3, "Sports": 0.4, "Tools": 1.0, "Toys": 0.4}


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def resolve_user_fraction(fraction: float | str, domain: str) -> float:
    """A fraction in (0, 1], or "paper" for the paper's sample of that domain."""
    if isinstance(fraction, str):
        if fraction.strip().lower() == "paper":
            return PAPER_USER_FRACTION[domain]
        try:
            fraction = float(fraction)
        except ValueError:
            raise ParameterError(f"user_fraction must be a number in (0, 1] or 'paper', got {fraction!r}") from None
    if not 0 < fraction <= 1:
        raise ParameterError(f"user_fraction must be in (0, 1], got {fraction}")
    return float(fraction)


def subsample_users(users: Iterable[int], fraction: float, seed: int) -> np.ndarray:
    """A seeded random subset of round(fraction * n) users, returned sorted."""
    users = np.sort(np.asarray(list(users), dtype=np.int64))
    if not 0 < fraction <= 1:
        raise ParameterError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return users
    k = _round_half_up(fraction * len(users))
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(users, size=k, replace=False))


def split_users(users: Iterable[int], seed: int, ratios: Sequence[int] = SPLIT_RATIOS) -> dict[str, np.ndarray]:
    """Seeded user split into train/validation/test in the given ratios (3:1:1).

    Sizes are round-half-up of n * ratio / sum for train and validation; test takes the rest,
    so every part is within one user of its exact share.
    """
    users = np.sort(np.asarray(list(users), dtype=np.int64))
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ParameterError(f"ratios must be three positive numbers, got {ratios}")
    n, total = len(users), sum(ratios)
    n_train = _round_half_up(n * ratios[0] / total)
    n_val = _round_half_up(n * ratios[1] / total)
    order = np.random.default_rng([seed, 2]).permutation(users)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return {name: np.sort(part) for name, part in zip(SPLITS, parts)}


def split_frame(split: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """{split: users} -> a frame (user, split) sorted by user."""
    frame = pd.concat([pd.DataFrame({"user": u, "split": s}) for s, u in split.items()], ignore_index=True)
    return frame.sort_values("user", ignore_index=True)


def item_popularity(sequences: Mapping[int, Sequence[int]], users: Iterable[int], n_items: int) -> np.ndarray:
    """Interaction counts per item id over the given users' whole sequences."""
    counts = np.zeros(n_items, dtype=np.int64)
    for u in users:
        np.add.at(counts, np.asarray(sequences[int(u)], dtype=np.int64), 1)
    return counts


def sample_candidates(
    target: int, exclude: Sequence[int], popularity: np.ndarray, rng: np.random.Generator,
    n_candidates: int = N_CANDIDATES,
) -> tuple[list[int], int]:
    """The target and n_candidates - 1 popularity-sampled negatives outside `exclude` (the user's
    sequence), in a random order. Returns (candidates, index of the target)."""
    weights = popularity.astype(np.float64)
    weights[np.asarray(list(exclude) + [target], dtype=np.int64)] = 0.0
    n_neg = n_candidates - 1
    if np.count_nonzero(weights) < n_neg:
        raise DataError(
            f"only {np.count_nonzero(weights)} items with training popularity lie outside this "
            f"user's sequence; {n_neg} negatives are needed. Fix: use more training users or fewer candidates."
        )
    negatives = rng.choice(len(weights), size=n_neg, replace=False, p=weights / weights.sum())
    target_index = int(rng.integers(n_candidates))
    candidates = [int(i) for i in negatives]
    candidates.insert(target_index, int(target))
    return candidates, target_index


def make_candidates(
    sequences: Mapping[int, Sequence[int]],
    split: Mapping[str, np.ndarray],
    seed: int,
    n_items: int | None = None,
    n_candidates: int = N_CANDIDATES,
    progress: bool = True,
) -> pd.DataFrame:
    """Candidate lists for every user of the split; popularity is counted over training users.

    Columns: user, split, history (item ids), target, candidates (n_candidates ids), target_index.
    """
    if n_items is None:
        n_items = 1 + max(i for s in sequences.values() for i in s)
    popularity = item_popularity(sequences, split["train"], n_items)
    rows = []
    users = [(int(u), name) for name in SPLITS for u in split[name]]
    for user, name in tqdm(users, desc="candidates", disable=not progress, leave=False):
        seq = sequences[user]
        cands, t = sample_candidates(seq[-1], seq, popularity, np.random.default_rng([seed, 3, user]), n_candidates)
        rows.append((user, name, list(seq[:-1]), int(seq[-1]), cands, t))
    frame = pd.DataFrame(rows, columns=["user", "split", "history", "target", "candidates", "target_index"])
    return frame.sort_values("user", ignore_index=True)


CANDIDATE_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("split", pa.string()),
        ("history", pa.list_(pa.int64())),
        ("target", pa.int64()),
        ("candidates", pa.list_(pa.int64())),
        ("target_index", pa.int64()),
    ]
)
SPLIT_SCHEMA = pa.schema([("user", pa.int64()), ("split", pa.string())])


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> Path:
    """Atomic, deterministic parquet write: same frame, same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pydict({name: frame[name].tolist() for name in schema.names}, schema=schema)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read_candidates(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no candidate file at {path}. Fix: run notebooks/00_data.ipynb (or prepare_protocol) first.")
    frame = pq.read_table(path).to_pandas()
    missing = set(CANDIDATE_SCHEMA.names) - set(frame.columns)
    if missing:
        raise DataError(f"{path} is not a candidate file: it lacks the columns {sorted(missing)}.")
    frame["history"] = frame["history"].map(list)
    frame["candidates"] = frame["candidates"].map(list)
    return frame


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_deviation(sizes: Mapping[str, int], ratios: Sequence[int] = SPLIT_RATIOS) -> float:
    """Largest distance, in users, of a split's part sizes from their exact 3:1:1 shares."""
    n = sum(sizes[s] for s in SPLITS)
    return max(abs(sizes[s] - n * r / sum(ratios)) for s, r in zip(SPLITS, ratios))


def prefix_examples(
    sequences: Mapping[int, Sequence[int]],
    users: Iterable[int],
    popularity: np.ndarray,
    seed: int,
    min_history: int = 4,
    n_candidates: int = N_CANDIDATES,
) -> pd.DataFrame:
    """More training examples per user: every prefix with at least `min_history` items predicts
    the item after it (the last item included). Negatives are drawn as for the evaluation lists
    (by popularity, outside the user's whole sequence), seeded by (seed, user, position).
    Columns as make_candidates, with `position` (index of the target in the sequence)."""
    rows = []
    for user in users:
        seq = list(sequences[int(user)])
        for pos in range(min_history, len(seq)):
            rng = np.random.default_rng([seed, 4, int(user), pos])
            cands, t = sample_candidates(seq[pos], seq, popularity, rng, n_candidates)
            rows.append((int(user), "train", seq[:pos], seq[pos], cands, t, pos))
    return pd.DataFrame(rows, columns=["user", "split", "history", "target", "candidates", "target_index", "position"])
