"""Scoring candidate lists with a model: several users per forward pass, batches of similar length."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.encoding import PromptEncoder, pad
from ..metrics import per_user_metrics
from ..models.scorer import scorer_config_of
from .allocator import keep_freed_memory


def autocast(device: torch.device | str, bf16: bool):
    device = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding is small."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_candidates(
    model: torch.nn.Module,
    encoder: PromptEncoder,
    frame: pd.DataFrame,
    batch_users: int = 8,
    bf16: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "scoring",
    cache_items: bool = True,
) -> np.ndarray:
    """(users x candidates) scores for the rows of a candidate frame, in the frame's order.

    Two-tower models (separate encoding) encode each distinct candidate title once and each
    history once, then score every list from those embeddings (cache_items; the same scores as
    scoring each list on its own, tested); other models score several users' lists per pass."""
    device = torch.device(device or next(model.parameters()).device)
    if device.type == "cpu":
        keep_freed_memory()
    was_training = model.training
    model.eval()
    histories, candidates = frame["history"].tolist(), frame["candidates"].tolist()
    if cache_items and two_towers(model):
        scores = _score_two_towers(model, encoder, histories, candidates, device, bf16, progress, desc)
        model.train(was_training)
        return scores
    lengths = np.array([sum(len(encoder.item_ids[i]) for i in h) for h in histories])
    scores = np.zeros((len(frame), len(candidates[0])), dtype=np.float32)
    batches = length_sorted_batches(lengths, batch_users)
    for idx in tqdm(batches, desc=desc, disable=not progress, leave=False):
        batch = encoder.batch([histories[i] for i in idx], [candidates[i] for i in idx], [0] * len(idx)).to(device)
        with autocast(device, bf16):
            out = model(**batch.model_inputs())
        scores[idx] = out.float().view(len(idx), -1).cpu().numpy()
    model.train(was_training)
    return scores


def evaluate_scorer(model, encoder: PromptEncoder, frame: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """Per-user metrics of a model on a candidate frame (columns user, rank, hit@k, mrr, ndcg@10)."""
    scores = score_candidates(model, encoder, frame, **kwargs)
    return per_user_metrics(scores, frame["target_index"].to_numpy(), frame["user"].to_numpy())


def two_towers(model) -> bool:
    """A model whose candidates are encoded apart from the history (and has `embed`)."""
    return hasattr(model, "embed") and scorer_config_of(model).encoding == "separate"


@torch.inference_mode()
def embed_segments(embed, encoder: PromptEncoder, id_lists, device, bf16: bool = False, batch_size: int = 128,
                   progress: bool = False, desc: str = "embedding") -> torch.Tensor:
    """(len(id_lists), d) embeddings of single segments ([CLS] ids [SEP], cut to max_length) by
    embed(input_ids, attention_mask) -> (N, d), in length-sorted batches."""
    segments = [encoder.single(ids) for ids in id_lists]
    out = None
    for idx in tqdm(length_sorted_batches(np.array([len(x) for x in segments]), batch_size), desc=desc,
                    disable=not progress, leave=False):
        ids, mask, _ = pad([segments[i] for i in idx], encoder.pad_id)
        with autocast(device, bf16):
            emb = embed(ids.to(device), mask.to(device)).float()
        if out is None:
            out = torch.zeros(len(segments), emb.shape[-1], device=device)
        out[torch.as_tensor(idx, device=device)] = emb
    return out


def history_texts(encoder: PromptEncoder, histories) -> list[list[int]]:
    """Each history's newest items that fit one segment of max_length."""
    budget = encoder.max_length - len(encoder.single_prefix) - len(encoder.single_suffix)
    return [encoder.history_ids(h, budget) for h in histories]


def _score_two_towers(model, encoder: PromptEncoder, histories, candidates, device, bf16, progress, desc) -> np.ndarray:
    items = sorted({c for cands in candidates for c in cands})
    row_of = {item: r for r, item in enumerate(items)}
    history_emb = embed_segments(model.embed, encoder, history_texts(encoder, histories), device, bf16,
                                 progress=progress, desc=f"{desc}: histories")
    item_emb = embed_segments(model.embed, encoder, [encoder.item_ids[i] for i in items], device, bf16,
                              progress=progress, desc=f"{desc}: {len(items)} distinct candidates")
    rows = torch.as_tensor([[row_of[c] for c in cands] for cands in candidates], device=device)  # (U, C)
    scores = np.zeros(tuple(rows.shape), dtype=np.float32)
    for start in range(0, len(rows), 256):
        part = rows[start : start + 256]
        out = model.head(history_emb[start : start + 256], item_emb[part.reshape(-1)])  # (u*C,)
        scores[start : start + 256] = out.float().view(len(part), -1).cpu().numpy()
    return scores


@torch.inference_mode()
def two_tower_full_scores(model, encoder: PromptEncoder, histories, items, bf16: bool = False, batch_users: int = 64,
                          batch_items: int = 1024, progress: bool = False, desc: str = "full ranking") -> np.ndarray:
    """(users, len(items)) scores of a two-tower model for every item: each title and each history
    encoded once, every pair scored by the model's own head (in blocks, so memory stays small)."""
    if not two_towers(model):
        raise ValueError("full ranking needs a two-tower model (scorer encoding 'separate')")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    history_emb = embed_segments(model.embed, encoder, history_texts(encoder, histories), device, bf16,
                                 progress=progress, desc=f"{desc}: histories")
    item_emb = embed_segments(model.embed, encoder, [encoder.item_ids[i] for i in items], device, bf16,
                              progress=progress, desc=f"{desc}: {len(items)} items")
    scores = np.zeros((len(histories), len(items)), dtype=np.float32)
    for u in range(0, len(histories), batch_users):
        h = history_emb[u : u + batch_users]  # (B, d)
        for i in range(0, len(items), batch_items):
            block = item_emb[i : i + batch_items]  # (C, d)
            cands = block.unsqueeze(0).expand(len(h), -1, -1).reshape(-1, block.shape[-1])  # (B*C, d)
            scores[u : u + batch_users, i : i + batch_items] = model.head(h, cands).float().view(len(h), -1).cpu().numpy()
    model.train(was_training)
    return scores
