"""Multiple-choice training of a scorer, with checkpoints that resume to the same weights.

One example = one user's candidate prompts; the loss is the cross-entropy over their scores.
Each epoch visits the training users in an order seeded by (seed, epoch); with
`train_candidates` < the list's length, each example keeps its target and a seeded sample of its
negatives. A checkpoint (trainable weights, optimizer, schedule, RNG, position, learning curve) is
written atomically every `checkpoint_every` optimizer steps and at each epoch end; a run started
again with the same out_dir and settings continues where it stopped and ends with the same weights
as a run that was never stopped. Validation Hit@1 is measured at each epoch end and the best
weights are kept. Device and mixed precision go through Hugging Face Accelerate.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..data.encoding import PromptEncoder
from ..metrics import summarize
from ..models.scorer import multiple_choice_loss
from .allocator import keep_freed_memory
from .evaluate import evaluate_scorer


@dataclass
class TrainConfig:
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    epochs: int = 1
    batch_size: int = 1  # examples (users) per forward pass
    grad_accumulation: int = 1  # forward passes per optimizer step
    train_candidates: int = 30  # candidates per training example (target + sampled negatives)
    warmup_ratio: float = 0.0
    max_length: int = 256
    seed: int = 0
    bf16: bool | str = "auto"  # "auto": where the hardware has it (CUDA with bf16, or a CPU with AVX-512 BF16/AMX)
    eval_batch_users: int = 8
    checkpoint_every: int = 200  # optimizer steps
    log_every: int = 10  # optimizer steps per learning-curve point

    def __post_init__(self):
        for name in ("learning_rate", "weight_decay", "warmup_ratio"):
            value = getattr(self, name)
            if isinstance(value, str):  # "2e-4" from a YAML file reads as a string
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        for name in ("epochs", "batch_size", "grad_accumulation", "train_candidates", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    curve: pd.DataFrame  # step, epoch, examples, loss (mean since the last point), lr, examples_per_s
    validation: pd.DataFrame  # epoch, step, hit@1, mrr
    best_epoch: int
    best_hit1: float
    wall_s: float
    bf16: bool = False  # whether training ran under bf16 autocast
    config: dict = field(default_factory=dict)


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cap = torch.backends.cpu.get_cpu_capability()
        return cap in ("AVX512", "AMX") or "AMX" in cap
    return False


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, 10, epoch]).permutation(n_examples)
    return [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]


def training_candidates(row, k: int, seed: int, epoch: int) -> tuple[list[int], int]:
    """The target and k-1 of the row's negatives, in a seeded random order."""
    candidates, t = list(row.candidates), int(row.target_index)
    if k >= len(candidates):
        return candidates, t
    rng = np.random.default_rng([seed, 11, epoch, int(row.user)])
    negatives = [c for j, c in enumerate(candidates) if j != t]
    chosen = [negatives[j] for j in rng.choice(len(negatives), size=k - 1, replace=False)]
    position = int(rng.integers(k))
    chosen.insert(position, candidates[t])
    return chosen, position


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_scorer(
    model,
    encoder: PromptEncoder,
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train `model` (a Scorer or anything with trainable_state/load_trainable_state) in place.

    out_dir holds checkpoint.pt (to resume) and best.pt (best validation Hit@1 weights); at the end
    the model holds the best weights. stop_after_steps stops early, as an interruption would
    (for tests and for splitting long runs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    if device.type == "cpu":
        keep_freed_memory()
    use_bf16 = bf16_available(device) if config.bf16 == "auto" else bool(config.bf16)

    _set_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = math.ceil(math.ceil(len(train) / config.batch_size) / config.grad_accumulation)
    total_steps = per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    state = {"epoch": 0, "batch": 0, "step": 0, "curve": [], "validation": [], "best_hit1": -1.0, "best_epoch": -1}
    ckpt_path, best_path = out / "checkpoint.pt", out / "best.pt"
    settings = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "eval_batch_users")}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["settings"] != settings or ckpt["n_train"] != len(train):
            raise ValueError(f"{ckpt_path} was written with other settings; remove it or use another out_dir")
        raw_model.load_trainable_state(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]

    def checkpoint() -> None:
        _save_atomic({"settings": settings, "n_train": len(train), "model": raw_model.trainable_state(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "torch_rng": torch.get_rng_state(), "state": state}, ckpt_path)

    rows = list(train.itertuples(index=False))
    steps_run, window_loss, window_examples, window_start = 0, [], 0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step", disable=not progress)
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        batches = epoch_batches(len(rows), config.batch_size, config.seed, epoch)
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        model.train()
        while state["batch"] < len(batches):
            chunk = batches[state["batch"] : state["batch"] + config.grad_accumulation]
            for idx in chunk:
                picked = [training_candidates(rows[i], config.train_candidates, config.seed, epoch) for i in idx]
                batch = encoder.batch([rows[i].history for i in idx], [c for c, _ in picked], [t for _, t in picked])
                batch = batch.to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    scores = model(**batch.model_inputs())
                loss = multiple_choice_loss(scores, batch.n_candidates, batch.target_index)
                accelerator.backward(loss * len(idx) / sum(len(b) for b in chunk))
                window_loss.append((loss.item(), len(idx)))
                window_examples += len(idx)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["batch"] += len(chunk)
            state["step"] += 1
            steps_run += 1
            bar.update(1)
            if state["step"] % config.log_every == 0 or state["batch"] >= len(batches):
                elapsed = time.perf_counter() - window_start
                mean_loss = sum(l * n for l, n in window_loss) / max(1, sum(n for _, n in window_loss))
                state["curve"].append({"step": state["step"], "epoch": epoch, "loss": mean_loss,
                                       "lr": scheduler.get_last_lr()[0], "examples_per_s": window_examples / elapsed})
                bar.set_postfix(loss=f"{mean_loss:.3f}", ex_s=f"{window_examples / elapsed:.1f}")
                window_loss, window_examples, window_start = [], 0, time.perf_counter()
            if state["step"] % config.checkpoint_every == 0:
                checkpoint()
            if stop_after_steps is not None and steps_run >= stop_after_steps:
                checkpoint()
                bar.close()
                return _result(state, config, started, use_bf16)
        # epoch end: validation, best weights, checkpoint
        if validation is not None and len(validation):
            per_user = evaluate_scorer(raw_model, encoder, validation, batch_users=config.eval_batch_users,
                                       bf16=use_bf16, progress=False)
            means = summarize(per_user)
            state["validation"].append({"epoch": epoch, "step": state["step"], "hit@1": means["hit@1"], "mrr": means["mrr"]})
            if means["hit@1"] > state["best_hit1"]:
                state["best_hit1"], state["best_epoch"] = float(means["hit@1"]), epoch
                _save_atomic(raw_model.trainable_state(), best_path)
            bar.write(f"epoch {epoch}: validation Hit@1 {means['hit@1']:.2f}  MRR {means['mrr']:.2f}")
        state["epoch"], state["batch"] = epoch + 1, 0
        checkpoint()
    bar.close()
    if best_path.is_file():
        raw_model.load_trainable_state(torch.load(best_path, weights_only=True))
    result = _result(state, config, started, use_bf16)
    (out / "curve.json").write_text(json.dumps({"curve": state["curve"], "validation": state["validation"]}, indent=1))
    return result


def _result(state: dict, config: TrainConfig, started: float, bf16: bool) -> TrainResult:
    return TrainResult(pd.DataFrame(state["curve"]), pd.DataFrame(state["validation"]), state["best_epoch"],
                       state["best_hit1"], time.perf_counter() - started, bf16, config.to_dict())
