"""Split and candidate files of one domain under outputs/, made once and reused."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import provenance
from .domain import Domain
from .protocol import (
    CANDIDATE_SCHEMA,
    N_CANDIDATES,
    SPLIT_SCHEMA,
    SPLITS,
    file_sha256,
    make_candidates,
    read_candidates,
    resolve_user_fraction,
    split_frame,
    split_users,
    subsample_users,
    write_parquet,
)


@dataclass
class ProtocolFiles:
    """Where one (domain, seed, user fraction) protocol lives, and what it holds."""

    dir: Path
    info: dict

    @property
    def split_path(self) -> Path:
        return self.dir / "split.parquet"

    @property
    def candidates_path(self) -> Path:
        return self.dir / "candidates.parquet"

    def candidates(self, split: str | None = None) -> pd.DataFrame:
        frame = read_candidates(self.candidates_path)
        return frame if split is None else frame[frame["split"] == split].reset_index(drop=True)


def protocol_dir(out_root: str | os.PathLike, domain: str, seed: int, user_fraction: float) -> Path:
    return Path(out_root) / domain / f"seed{seed}-users{user_fraction:g}"


def prepare_protocol(
    domain: Domain,
    out_root: str | os.PathLike,
    seed: int = 0,
    user_fraction: float | str = 1.0,
    n_candidates: int = N_CANDIDATES,
    overwrite: bool = False,
    progress: bool = True,
) -> ProtocolFiles:
    """Sub-sample users, split them 3:1:1, sample candidate lists, and write
    split.parquet, candidates.parquet and protocol.json. Reuses files made from the same data
    and settings unless overwrite is set."""
    fraction = resolve_user_fraction(user_fraction, domain.name)
    out = protocol_dir(out_root, domain.name, seed, fraction)
    info_path = out / "protocol.json"
    settings = {
        "domain": domain.name,
        "seed": int(seed),
        "user_fraction": fraction,
        "n_candidates": int(n_candidates),
        "data_fingerprint": domain.fingerprint,
    }
    if not overwrite and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut by a crash: a cache, made again from the data
            warnings.warn(f"{info_path} is unreadable ({e}); the protocol files are made again from the data")
            info = {}
        files = ProtocolFiles(out, info)
        same = all(info.get(k) == v for k, v in settings.items())
        if same and files.candidates_path.is_file() and file_sha256(files.candidates_path) == info.get("candidates_sha256"):
            return files

    users = subsample_users(domain.sequences.keys(), fraction, seed)
    split = split_users(users, seed)
    n_items = 1 + max(domain.asins) if domain.asins else None
    candidates = make_candidates(domain.sequences, split, seed, n_items, n_candidates, progress=progress)
    write_parquet(split_frame(split), out / "split.parquet", SPLIT_SCHEMA)
    write_parquet(candidates, out / "candidates.parquet", CANDIDATE_SCHEMA)
    info = {
        **settings,
        "users": {name: int(len(split[name])) for name in SPLITS},
        "candidates_sha256": file_sha256(out / "candidates.parquet"),
        "split_sha256": file_sha256(out / "split.parquet"),
        "commit": provenance.git_commit(),
    }
    provenance.write_json_atomic(info_path, info)
    return ProtocolFiles(out, info)
