"""The three reference rows of every result table: random, popularity, text similarity.

Each returns a (users x candidates) score matrix for the rows of a candidate frame.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .data.encoding import PromptEncoder
from .data.protocol import item_popularity
from .models.scorer import pool
from .training.evaluate import embed_segments, history_texts


def random_scores(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    n_candidates = len(frame["candidates"].iloc[0])
    return np.random.default_rng([seed, 20]).random((len(frame), n_candidates))


def popularity_scores(frame: pd.DataFrame, sequences: Mapping[int, Sequence[int]], train_users, n_items: int) -> np.ndarray:
    """Each candidate scored by its interaction count over training users."""
    counts = item_popularity(sequences, train_users, n_items).astype(float)
    return counts[np.stack(frame["candidates"].to_numpy())]


def text_similarity_scores(
    backbone_model, encoder: PromptEncoder, frame: pd.DataFrame, batch_size: int = 64, bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Cosine between the untrained backbone's mean-pooled embeddings of the history text and of
    each candidate title, encoded apart (history cut from its oldest item to max_length)."""
    device = next(backbone_model.parameters()).device

    def embed(ids, mask):  # mean-pooled, unit length
        hidden = backbone_model(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize(pool(hidden.float(), mask, "mean"), dim=-1)

    items = sorted({c for cands in frame["candidates"] for c in cands})
    hist_emb = embed_segments(embed, encoder, history_texts(encoder, frame["history"]), device, bf16, batch_size,
                              progress, "history texts")
    item_emb = embed_segments(embed, encoder, [encoder.item_ids[i] for i in items], device, bf16, batch_size,
                              progress, "titles")
    row_of = {item: r for r, item in enumerate(items)}
    cand_rows = torch.as_tensor([[row_of[c] for c in cands] for cands in frame["candidates"]], device=device)  # (U, C)
    return torch.einsum("ud,ucd->uc", hist_emb, item_emb[cand_rows]).cpu().numpy()
