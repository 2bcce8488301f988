"""Scoring candidate lists with a model: several users per forward pass, batches of similar length."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.encoding import PromptEncoder
from ..metrics import per_user_metrics


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
) -> np.ndarray:
    """(users x candidates) scores for the rows of a candidate frame, in the frame's order."""
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    histories, candidates = frame["history"].tolist(), frame["candidates"].tolist()
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
