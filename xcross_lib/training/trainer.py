"""Multiple-choice training of a scorer, with checkpoints that resume to the same weights.

One example = one user's candidate prompts; the loss is the cross-entropy over their scores.
Each epoch visits the training users in an order seeded by (seed, epoch); with
`train_candidates` < the list's length, each example keeps its target and a seeded sample of its
negatives. A checkpoint (trainable weights, optimizer, schedule, RNG, position, learning curve) is
written atomically every `checkpoint_every` optimizer steps and at each epoch end; a run started
again with the same out_dir and settings continues where it stopped and ends with the same weights
as a run that was never stopped. Validation (Hit@1 and MRR) is measured before the first step
(the untrained start is a candidate too), every `validate_every` optimizer steps and at each epoch
end; the weights with the best `select_metric` are kept, and every point is recorded.

Parameters train in two groups: the head (pooler and scorer: `head.*`), at head_learning_rate
(None: learning_rate) or frozen (train_head false), and everything else that trains (integrators,
stream weights, gates, adapters) at learning_rate. Two-tower batches encode each distinct
candidate title once. Device and mixed precision go through Hugging Face Accelerate.
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


SELECT_METRICS = ("mrr", "hit@1")
# settings that change how a run is done but not what it computes
NON_DEFINING = ("checkpoint_every", "checkpoint_every_s", "eval_batch_users", "log_every")


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
    bf16: bool | str = "auto"  # "auto": on a CUDA GPU that has it; float32 on a CPU (bf16_available)
    eval_batch_users: int = 8
    checkpoint_every: int = 200  # optimizer steps
    checkpoint_every_s: float | None = 120.0  # also checkpoint when this many seconds passed since the last one
    log_every: int = 10  # optimizer steps per learning-curve point
    head_learning_rate: float | None = None  # the head's group (pooler and scorer); None: learning_rate
    train_head: bool = True  # false: the head stays as it was (frozen, evaluation mode)
    validate_every: int | None = None  # optimizer steps between validations (besides the start and each epoch end)
    validate_at_start: bool = True  # score the untrained start on validation; it can be the best state
    select_metric: str = "mrr"  # validation metric that chooses the kept weights: "mrr" or "hit@1"

    def __post_init__(self):
        for name in ("learning_rate", "weight_decay", "warmup_ratio", "head_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, str):  # "2e-4" from a YAML file reads as a string
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        for name in ("epochs", "batch_size", "grad_accumulation", "train_candidates", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if self.validate_every is not None and int(self.validate_every) < 1:
            raise ValueError(f"validate_every must be at least 1 or None, got {self.validate_every!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be true, false or 'auto', got {self.bf16!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    curve: pd.DataFrame  # step, epoch, examples, loss (mean since the last point), lr, examples_per_s
    validation: pd.DataFrame  # epoch, step, examples, hit@1, mrr (step 0: the untrained start)
    best_epoch: int
    best_hit1: float  # validation Hit@1 of the kept weights
    wall_s: float  # seconds of training, summed over every process that worked on the run (resumes included);
    # NaN for a run resumed from a checkpoint that did not keep them (written before 6fd87e2)
    bf16: bool = False  # whether training ran under bf16 autocast
    config: dict = field(default_factory=dict)
    best_step: int = -1  # optimizer step of the kept weights (0: the untrained start)
    best_metric: float = float("nan")  # validation select_metric of the kept weights


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 kernels (AVX-512 BF16 or AMX)."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap in ("AVX512", "AMX") or "AMX" in cap


def bf16_available(device: torch.device) -> bool:
    """What bf16="auto" means on `device`: bf16 autocast on a CUDA GPU that has it, float32 on every
    CPU. Sessions draw CPUs with and without AVX-512 BF16, and a run's definition (bf16 "auto") is
    shared across them: with bf16 on the CPUs that have it, the same definition trained and scored
    differently by machine (a source model scored 33 of 800 Toys test users one rank apart;
    docs/results.md). bf16=True still asks for it on a CPU."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


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


def parameter_groups(model, config: TrainConfig) -> list[dict]:
    """AdamW groups: the head (`head.*`) at head_learning_rate, the rest that trains at learning_rate.
    With train_head false the head is frozen first (and so runs in evaluation mode)."""
    if not config.train_head and hasattr(model, "head"):
        for p in model.head.parameters():
            p.requires_grad_(False)
    head, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if name.startswith("head.") else rest).append(p)
    if not head and not rest:
        raise ValueError("nothing to train: every parameter of the model is frozen (train_head is false?)")
    head_lr = config.learning_rate if config.head_learning_rate is None else config.head_learning_rate
    groups = [{"params": rest, "lr": config.learning_rate, "name": "integration"},
              {"params": head, "lr": head_lr, "name": "head"}]
    return [g for g in groups if g["params"]]


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

    out_dir holds checkpoint.pt (to resume) and best.pt (the weights with the best validation
    select_metric, the untrained start included); at the end the model holds them.
    stop_after_steps stops early, as an interruption would (for tests and for splitting long runs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    if device.type == "cpu":
        keep_freed_memory()
    use_bf16 = bf16_available(device) if config.bf16 == "auto" else bool(config.bf16)

    _set_seed(config.seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    per_epoch = math.ceil(math.ceil(len(train) / config.batch_size) / config.grad_accumulation)
    total_steps = per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    # the window of the next learning-curve point is part of the state: a resumed run logs the same curve
    state = {"epoch": 0, "batch": 0, "step": 0, "examples": 0, "curve": [], "validation": [], "best": None,
             "window_loss": [], "window_examples": 0, "window_s": 0.0, "train_s": 0.0}
    ckpt_path, best_path = out / "checkpoint.pt", out / "best.pt"
    settings = {k: v for k, v in config.to_dict().items() if k not in NON_DEFINING}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["settings"] != settings or ckpt["n_train"] != len(train):
            changed = sorted(k for k in set(ckpt["settings"]) | set(settings)
                             if ckpt["settings"].get(k) != settings.get(k))
            if ckpt["n_train"] != len(train):
                changed.append(f"n_train ({ckpt['n_train']} -> {len(train)})")
            raise ValueError(f"{ckpt_path} was written with other settings ({', '.join(changed)}); "
                             "remove it or use another out_dir")
        raw_model.load_trainable_state(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = {**state, **ckpt["state"]}
        if "train_s" not in ckpt["state"]:  # written before training time was kept: the time before is unknown
            state["train_s"] = float("nan")
    before_s = state["train_s"]  # seconds of the processes before this one (a checkpoint keeps them)
    last_checkpoint = [time.perf_counter()]

    def train_s() -> float:
        return before_s + time.perf_counter() - started

    def checkpoint() -> None:
        state["train_s"] = train_s()  # the result reports the last checkpoint's: a reloaded finished run, the same
        _save_atomic({"settings": settings, "n_train": len(train), "model": raw_model.trainable_state(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "torch_rng": torch.get_rng_state(), "state": {**state, "window_s": window_s()}}, ckpt_path)
        last_checkpoint[0] = time.perf_counter()

    def window_s() -> float:
        """Seconds spent in the current learning-curve window, this process and the ones before it."""
        return state["window_s"] + time.perf_counter() - window_start

    def validate() -> None:
        """Score the validation users now; keep the weights when they are the best so far."""
        if validation is None or not len(validation):
            return
        if state["validation"] and state["validation"][-1]["step"] == state["step"]:
            return  # already validated at this step (an epoch end right after validate_every)
        rng = torch.get_rng_state()  # validation draws no training randomness
        per_user = evaluate_scorer(raw_model, encoder, validation, batch_users=config.eval_batch_users,
                                   bf16=use_bf16, progress=False)
        torch.set_rng_state(rng)
        means = summarize(per_user)
        point = {"epoch": state["epoch"], "step": state["step"], "examples": state["examples"],
                 "hit@1": float(means["hit@1"]), "mrr": float(means["mrr"])}
        state["validation"].append(point)
        if state["best"] is None or point[config.select_metric] > state["best"][config.select_metric]:
            state["best"] = point
            _save_atomic(raw_model.trainable_state(), best_path)
        bar.write(f"step {state['step']} (epoch {state['epoch']}): validation Hit@1 {means['hit@1']:.2f}  "
                  f"MRR {means['mrr']:.2f}")

    rows = list(train.itertuples(index=False))
    steps_run, window_start = 0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step", disable=not progress)
    if config.validate_at_start and state["step"] == 0 and not state["validation"]:
        validate()
        checkpoint()
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        batches = epoch_batches(len(rows), config.batch_size, config.seed, epoch)
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        model.train()
        while state["batch"] < len(batches):
            chunk = batches[state["batch"] : state["batch"] + config.grad_accumulation]
            for idx in chunk:
                picked = [training_candidates(rows[i], config.train_candidates, config.seed, epoch) for i in idx]
                batch = encoder.batch([rows[i].history for i in idx], [c for c, _ in picked], [t for _, t in picked],
                                      distinct_candidates=True)
                batch = batch.to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    scores = model(**batch.model_inputs())
                loss = multiple_choice_loss(scores, batch.n_candidates, batch.target_index)
                accelerator.backward(loss * len(idx) / sum(len(b) for b in chunk))
                state["window_loss"].append((loss.item(), len(idx)))
                state["window_examples"] += len(idx)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["batch"] += len(chunk)
            state["step"] += 1
            state["examples"] += sum(len(b) for b in chunk)
            steps_run += 1
            bar.update(1)
            if state["step"] % config.log_every == 0 or state["batch"] >= len(batches):
                elapsed, window = window_s(), state["window_loss"]
                mean_loss = sum(l * n for l, n in window) / max(1, sum(n for _, n in window))
                speed = state["window_examples"] / elapsed
                state["curve"].append({"step": state["step"], "epoch": epoch, "loss": mean_loss,
                                       "lr": scheduler.get_last_lr()[0], "examples_per_s": speed})
                bar.set_postfix(loss=f"{mean_loss:.3f}", ex_s=f"{speed:.1f}")
                state["window_loss"], state["window_examples"], state["window_s"] = [], 0, 0.0
                window_start = time.perf_counter()
            validated = bool(config.validate_every) and state["step"] % int(config.validate_every) == 0
            if validated:
                validate()
                model.train()
            overdue = config.checkpoint_every_s is not None and time.perf_counter() - last_checkpoint[0] >= config.checkpoint_every_s
            if validated or overdue or state["step"] % config.checkpoint_every == 0:
                checkpoint()
            if stop_after_steps is not None and steps_run >= stop_after_steps:
                checkpoint()
                bar.close()
                return _result(state, config, state["train_s"], use_bf16)
        # epoch end: validation, best weights, checkpoint
        validate()
        state["epoch"], state["batch"] = epoch + 1, 0
        checkpoint()
    bar.close()
    if best_path.is_file():
        raw_model.load_trainable_state(torch.load(best_path, weights_only=True))
    result = _result(state, config, state["train_s"], use_bf16)
    (out / "curve.json").write_text(json.dumps({"curve": state["curve"], "validation": state["validation"]}, indent=1))
    return result


def _result(state: dict, config: TrainConfig, wall_s: float, bf16: bool) -> TrainResult:
    best = state["best"] or {"epoch": -1, "step": -1, "hit@1": -1.0, config.select_metric: float("nan")}
    return TrainResult(pd.DataFrame(state["curve"]), pd.DataFrame(state["validation"]), best["epoch"],
                       best["hit@1"], wall_s, bf16, config.to_dict(), best["step"],
                       best[config.select_metric])
