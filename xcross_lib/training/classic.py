"""Training of the ID-based sequential recommenders (models/classic.py) on our user split.

Examples are RecBole's for sequential models: every prefix of a training user's sequence predicts
the item after it (the last item included). A model's own `calculate_loss` gives the loss (BERT4Rec's
inputs masked by RecBole's own `MaskItemSequence`; S3-Rec first pre-trained with its four
self-supervised losses, then fine-tuned). After every epoch the model scores the validation users'
stored candidate lists (our protocol: 30 candidates, ties against the target), and the weights with
the best validation MRR are kept (epochs 1 and later; the untrained start is on the curve only);
training stops after `stopping_step` epochs without a better one
(RecBole's early stopping), at `max_epochs`, or when `time_budget_s` is spent. Test users are never
seen here.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..metrics import per_user_metrics
from ..models.classic import batch_interaction, build_model, full_scores


@dataclass
class ClassicConfig:
    """RecBole's defaults where it has one (learning rate, batch size, early stopping, 50 items);
    `time_budget_s` and `pretrain_budget_s` keep each model within ten minutes on a 2-core CPU."""

    model: str
    learning_rate: float = 1e-3
    train_batch_size: int = 2048
    max_epochs: int = 300
    stopping_step: int = 10
    max_seq_length: int = 50
    time_budget_s: float = 480.0
    pretrain_epochs: int = 500  # S3-Rec only; RecBole's default, cut by pretrain_budget_s
    pretrain_budget_s: float = 120.0
    seed: int = 0
    overrides: dict | None = None  # RecBole hyperparameters other than its defaults

    def to_dict(self) -> dict:
        return asdict(self)


def next_epoch_fits(elapsed_s: float, last_epoch_s: float, budget_s: float, overrun: float = 0.25) -> bool:
    """Whether to start another epoch: not once the budget is spent, nor when, at the pace of the
    last epoch, the next would end more than `overrun` of the budget past it (480 s: by 600 s, the
    10-minute bar; an epoch under way is never cut)."""
    return elapsed_s <= budget_s and elapsed_s + last_epoch_s <= (1 + overrun) * budget_s


def prefix_examples(sequences: Mapping[int, Sequence[int]], users) -> tuple[list[list[int]], list[int]]:
    """(histories, targets): every prefix of each user's sequence and the item after it."""
    histories, targets = [], []
    for u in users:
        seq = list(sequences[int(u)])
        for pos in range(1, len(seq)):
            histories.append(seq[:pos])
            targets.append(seq[pos])
    return histories, targets


def _seed_everything(seed: int) -> None:
    random.seed(seed)  # RecBole's masking and S3-Rec's pre-training draw with `random`
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch(model, histories, targets, config: ClassicConfig, optimizer, rng, transform=None, catalogue=None,
           full_width: bool = False) -> float:
    model.train()
    order = rng.permutation(len(histories))
    losses = []
    for start in range(0, len(order), config.train_batch_size):
        idx = order[start : start + config.train_batch_size]
        inter = batch_interaction([histories[i] for i in idx], [targets[i] for i in idx], config.max_seq_length,
                                  full_width=full_width)
        if transform is not None:
            inter = transform(catalogue, inter)
        loss = model.calculate_loss(inter)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def sampled_per_user(full: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-user metrics on the frame's stored candidate lists, from (users, items) scores."""
    cands = np.stack(frame["candidates"].to_numpy())
    return per_user_metrics(np.take_along_axis(full, cands, axis=1), frame["target_index"].to_numpy(),
                            frame["user"].to_numpy())


def validation_mrr(model, frame: pd.DataFrame) -> float:
    return float(sampled_per_user(full_scores(model, frame["history"].tolist()), frame)["mrr"].mean())


SELECTION = "best validation MRR (30 candidates) over trained epochs"


def train_classic(config: ClassicConfig, catalogue, sequences: Mapping[int, Sequence[int]], train_users,
                  validation: pd.DataFrame, progress: bool = True, on_epoch=None):
    """Train one model; returns (model with the best validation weights, curve frame, summary dict).
    on_epoch(curve so far) is called after each epoch (the study writes the curve as it grows)."""
    _seed_everything(config.seed)
    transform = None
    if config.model == "BERT4Rec":  # before the model: the transform names the masked fields in the config
        from recbole.data.transform import MaskItemSequence

        transform = MaskItemSequence(catalogue.config)
    model = build_model(config.model, catalogue, config.seed)
    histories, targets = prefix_examples(sequences, train_users)
    rng = np.random.default_rng(config.seed)
    rows, started = [], time.perf_counter()
    if config.model == "S3Rec":  # self-supervised pre-training on the training users' sequences
        seqs = [list(sequences[int(u)])[-config.max_seq_length:] for u in train_users]
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        bar = tqdm(range(config.pretrain_epochs), desc=f"{config.model} pre-training", disable=not progress, leave=False)
        for epoch in bar:
            loss = _epoch(model, seqs, [s[-1] for s in seqs], config, optimizer, rng, full_width=True)
            rows.append({"stage": "pretrain", "epoch": epoch + 1, "train_loss": loss, "validation_mrr": np.nan,
                         "elapsed_s": time.perf_counter() - started})
            bar.set_postfix(loss=f"{loss:.3f}")
            if time.perf_counter() - started > config.pretrain_budget_s:
                break
        # RecBole fine-tunes in a second run that builds the model with train_stage "finetune" and
        # loads the pre-trained weights (torch.load of a pickle); the same, in place: the stage and
        # the loss that RecBole's __init__ gives that stage (CE, its loss_type)
        model.train_stage = "finetune"
        model.loss_fct = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # the untrained model is measured for the curve, not kept: as in RecBole, the kept model is the
    # best trained epoch (a model that is never trained is not the model under test)
    rows.append({"stage": "train", "epoch": 0, "train_loss": np.nan, "validation_mrr": validation_mrr(model, validation),
                 "elapsed_s": time.perf_counter() - started})
    best, best_state, best_epoch, waited = -np.inf, None, 0, 0
    stopped = "max_epochs"
    bar = tqdm(range(1, config.max_epochs + 1), desc=config.model, disable=not progress, leave=False)
    for epoch in bar:
        loss = _epoch(model, histories, targets, config, optimizer, rng, transform, catalogue)
        mrr = validation_mrr(model, validation)
        rows.append({"stage": "train", "epoch": epoch, "train_loss": loss, "validation_mrr": mrr,
                     "elapsed_s": time.perf_counter() - started})
        bar.set_postfix(loss=f"{loss:.3f}", val_mrr=f"{mrr:.4f}")
        if mrr > best:
            best, best_epoch, waited, best_state = mrr, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            waited += 1
        if waited >= config.stopping_step:
            stopped = "early stopping"
            break
        elapsed = time.perf_counter() - started
        if not next_epoch_fits(elapsed, elapsed - rows[-2]["elapsed_s"], config.time_budget_s):
            stopped = "time budget"
            break
        if on_epoch is not None:
            on_epoch(pd.DataFrame(rows))
    if best_state is None:
        raise ValueError(f"{config.model}: no epoch was trained (max_epochs = {config.max_epochs})")
    model.load_state_dict(best_state)
    model.eval()
    curve = pd.DataFrame(rows)
    summary = {"model": config.model, "best_epoch": best_epoch, "validation_mrr": best, "stopped": stopped,
               "epochs_run": int(curve.loc[curve["stage"] == "train", "epoch"].max()),
               "pretrain_epochs_run": int((curve["stage"] == "pretrain").sum()),
               "train_examples": len(histories), "train_s": time.perf_counter() - started}
    return model, curve, summary

