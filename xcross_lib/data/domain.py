"""One domain of the shared format: sequences per user and titles per item.

Format (see shared/data/amazon2018-xcross/SOURCE.md): `train.json` and `test.json` map a user
index to the user's item indices in time order (the files' own 80/20 split, which we pool);
`smap.json` maps ASIN -> item index; `meta_data.json` maps ASIN -> title.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .paths import REQUIRED_FILES, domain_dir, resolve_domain

MISSING_TITLE = "(no title)"


@dataclass
class Domain:
    """A domain's users and items. Item ids are the indices of `smap.json`."""

    name: str
    sequences: dict[int, list[int]]  # user id -> item ids, oldest first; the last is the target
    titles: dict[int, str]  # item id -> title as stored (HTML entities not yet unescaped)
    asins: dict[int, str] = field(default_factory=dict)  # item id -> ASIN
    untitled: list[int] = field(default_factory=list)  # item ids whose title was null or empty
    path: Path | None = None
    fingerprint: str = ""  # SHA-256 over the domain's files, to tie results to the data

    @property
    def users(self) -> list[int]:
        return sorted(self.sequences)

    @property
    def items(self) -> list[int]:
        """Item ids that occur in some sequence."""
        return sorted({i for seq in self.sequences.values() for i in seq})

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def summary(self) -> dict:
        """The Table-1 figures of this domain."""
        lengths = np.array([len(s) for s in self.sequences.values()])
        n_users, n_items = len(self.sequences), len(self.items)
        return {
            "domain": self.name,
            "users": n_users,
            "items": n_items,
            "interactions": int(lengths.sum()),
            "density": float(lengths.sum() / (n_users * n_items)),
            "seq_len_mean": float(lengths.mean()),
            "seq_len_min": int(lengths.min()),
            "seq_len_max": int(lengths.max()),
            "untitled_items": len(self.untitled),
        }


def read_json(path: Path) -> object:
    """json.load with an error that names the file, the place and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}). Fix: download the file again.") from None
    if not text.strip():
        raise DataError(f"{path} is empty. Fix: download the file again.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        truncated = e.pos >= len(text.rstrip()) - 1
        what = "truncated" if truncated else "malformed"
        raise DataError(
            f"{path} is {what} JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Fix: download the file again (python -m xcross_lib.data.download checks SHA-256)."
        ) from None


def _as_mapping(obj: object, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path} must hold a JSON object ({what}), found {type(obj).__name__}.")
    return obj


def _read_sequences(path: Path) -> dict[int, list[int]]:
    raw = _as_mapping(read_json(path), path, '{"<user index>": [item index, ...]}')
    sequences = {}
    for user, seq in raw.items():
        if not (isinstance(seq, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in seq)):
            raise DataError(f"{path}: user {user!r} must map to a list of item indices, found {seq!r:.80}.")
        try:
            sequences[int(user)] = seq
        except ValueError:
            raise DataError(f"{path}: user key {user!r} is not an integer index.") from None
    return sequences


def _is_missing_title(title: object) -> bool:
    return title is None or (isinstance(title, float) and math.isnan(title)) or (
        isinstance(title, str) and not title.strip()
    )


def load_domain(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    missing_titles: str = "warn",
    min_items: int = 2,
) -> Domain:
    """Load one domain: pooled sequences of train.json and test.json, and titles per item.

    missing_titles: what to do with an item whose title is null/NaN/empty in meta_data.json
    (three Sports items are): "warn" gives it the title "(no title)" and warns, "error" raises.
    An item of a sequence that has no entry in smap.json or meta_data.json at all is always an error.
    """
    if missing_titles not in ("warn", "error"):
        raise ValueError(f"missing_titles must be 'warn' or 'error', got {missing_titles!r}")
    name = resolve_domain(name, data_dir)
    path = domain_dir(name, data_dir)

    sequences = _read_sequences(path / "train.json")
    for user, seq in _read_sequences(path / "test.json").items():
        if user in sequences:
            raise DataError(f"{path}: user {user} is in both train.json and test.json.")
        sequences[user] = seq
    if not sequences:
        raise DataError(f"{path}: train.json and test.json hold no users.")

    short = [u for u, s in sequences.items() if len(s) < min_items]
    if short:
        raise DataError(
            f"{name}: {len(short)} user(s) have fewer than {min_items} items (e.g. user {short[0]}: "
            f"{sequences[short[0]]}); a user needs a history and a target. Fix: drop them from "
            "the files, or rebuild the domain with xcross_lib.data.raw (it keeps users with 5-15 items)."
        )

    smap = _as_mapping(read_json(path / "smap.json"), path / "smap.json", '{"<ASIN>": item index}')
    meta = _as_mapping(read_json(path / "meta_data.json"), path / "meta_data.json", '{"<ASIN>": title}')
    asins = {int(idx): asin for asin, idx in smap.items()}

    used = {i for seq in sequences.values() for i in seq}
    no_asin = sorted(used - asins.keys())
    no_meta = sorted(i for i in used if i in asins and asins[i] not in meta)
    if no_asin or no_meta:
        examples = [f"item {i} (not in smap.json)" for i in no_asin[:3]]
        examples += [f"item {i} = {asins[i]} (not in meta_data.json)" for i in no_meta[:3]]
        raise DataError(
            f"{name}: {len(no_asin) + len(no_meta)} item(s) of the sequences have no title: "
            f"{'; '.join(examples)}. Fix: download the domain again; if the files are your own, "
            "give every item of a sequence an ASIN in smap.json and a title in meta_data.json."
        )

    titles, untitled = {}, []
    for item, asin in asins.items():
        if asin not in meta:
            continue
        title = meta[asin]
        if _is_missing_title(title):
            untitled.append(item)
            title = MISSING_TITLE
        titles[item] = str(title)
    untitled_used = sorted(i for i in untitled if i in used)
    if untitled_used:
        msg = (
            f"{name}: {len(untitled_used)} item(s) have an empty or null title in meta_data.json "
            f"({', '.join(asins[i] for i in untitled_used[:5])})"
        )
        if missing_titles == "error":
            raise DataError(msg + ". Fix: give them titles, or load with missing_titles='warn'.")
        warnings.warn(msg + f"; their prompts use the title {MISSING_TITLE!r}.", stacklevel=2)

    return Domain(
        name=name,
        sequences=sequences,
        titles=titles,
        asins=asins,
        untitled=untitled,
        path=path,
        fingerprint=data_fingerprint(path),
    )


def data_fingerprint(path: Path) -> str:
    """SHA-256 over the sequence and title files of a domain folder (names and bytes)."""
    h = hashlib.sha256()
    for name in REQUIRED_FILES:
        h.update(name.encode() + b"\0" + (path / name).read_bytes())
    return h.hexdigest()
