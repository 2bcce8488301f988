"""The three reference rows of every result table: random, popularity, text similarity.

Each returns a (users x candidates) score matrix for the rows of a candidate frame.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data.encoding import PromptEncoder
from .data.protocol import item_popularity
from .models.scorer import pool
from .training.evaluate import autocast, length_sorted_batches


def random_scores(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    n_candidates = len(frame["candidates"].iloc[0])
    return np.random.default_rng([seed, 20]).random((len(frame), n_candidates))


def popularity_scores(frame: pd.DataFrame, sequences: Mapping[int, Sequence[int]], train_users, n_items: int) -> np.ndarray:
    """Each candidate scored by its interaction count over training users."""
    counts = item_popularity(sequences, train_users, n_items).astype(float)
    return counts[np.stack(frame["candidates"].to_numpy())]


@torch.inference_mode()
def _embed(model, encoder: PromptEncoder, id_lists: list[list[int]], batch_size: int, bf16: bool, progress: bool, desc: str):
    """Mean-pooled, L2-normalised embeddings of single segments ([CLS] ids [SEP])."""
    device = next(model.parameters()).device
    out = torch.zeros(len(id_lists), model.config.hidden_size)
    for idx in tqdm(length_sorted_batches(np.array([len(x) for x in id_lists]), batch_size), desc=desc,
                    disable=not progress, leave=False):
        seqs = [encoder.prefix + id_lists[i] + encoder.suffix for i in idx]
        longest = max(map(len, seqs))
        ids = torch.full((len(seqs), longest), encoder.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
        with autocast(device, bf16):
            hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        out[idx] = torch.nn.functional.normalize(pool(hidden.float(), mask.to(device), "mean"), dim=-1).cpu()
    return out


def text_similarity_scores(
    backbone_model, encoder: PromptEncoder, frame: pd.DataFrame, batch_size: int = 64, bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Cosine between the untrained backbone's mean-pooled embeddings of the history text and of
    each candidate title, encoded apart (history cut from its oldest item to max_length)."""
    budget = encoder.max_length - len(encoder.prefix) - len(encoder.suffix)
    histories = [encoder.history_ids(h, budget) for h in frame["history"]]
    items = sorted({c for cands in frame["candidates"] for c in cands})
    hist_emb = _embed(backbone_model, encoder, histories, batch_size, bf16, progress, "history texts")
    item_emb = _embed(backbone_model, encoder, [encoder.item_ids[i] for i in items], batch_size, bf16, progress, "titles")
    row_of = {item: r for r, item in enumerate(items)}
    cand_rows = np.vectorize(row_of.__getitem__)(np.stack(frame["candidates"].to_numpy()))  # (U, C)
    scores = torch.einsum("ud,ucd->uc", hist_emb, item_emb[torch.from_numpy(cand_rows)])
    return scores.numpy()
