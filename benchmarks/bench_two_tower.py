"""Two-tower training speed on real data, in user-steps per second, through the project's trainer.

    .venv/bin/python benchmarks/bench_two_tower.py                 # Tools, sources Sports + Electronics
    .venv/bin/python benchmarks/bench_speed.py --two-tower-only    # the same figures from bench_speed

Models (the shipped two-tower source models, MiniLM): X-Cross n = 2 integrating all layers (K = all)
and the top half (K = half), and a new target LoRA with the sources' scorer settings. Each trains
`--steps` optimizer steps of 8 users x 30 candidates (the CPU recipe) on the target's first
training users, in bf16 where the CPU has it natively (else float32: emulated bf16 is many times
slower), with `train_scorer(..., stop_after_steps=...)`, so the timed work is what a
study runs: batch assembly, forward, backward, optimizer. The first `--warmup` steps are not timed.
X-Cross runs with its settings' defaults and, where this code has the option, with the copied head
frozen. The script uses only what the trainer offered before the speed work as well, so the same
file times an older commit (run it with that commit's xcross_lib on the path).

Scores: the untrained models' evaluation scores of `--score-users` test users, and their scores of
the first 8 training users' lists through the training forward (the path the speed work changed),
are written to `--scores-out` (.npz) when given, so two commits can be compared score by score
(`--compare-with OTHER.npz` prints the largest absolute difference per model; `--scores-only`
skips the timing).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
import warnings

import numpy as np
import torch


PRECISION = {"bf16": "auto"}  # "auto": bf16 where the CPU has it (AVX-512 BF16 / AMX), else float32; --precision


def made_models(target_sources: list[str]):
    """{label: zero-argument builder} over the shipped source models."""
    from xcross_lib.experiments import build_xcross
    from xcross_lib.models import Scorer, ScorerConfig, load_backbone
    from xcross_lib.models.source import read_record
    from xcross_lib.models.xcross import XCrossConfig

    record = read_record(target_sources[0])
    layers = load_backbone(record["backbone"]).num_layers
    return {
        "X-Cross n=2 K=all": lambda: build_xcross(target_sources, XCrossConfig()),
        f"X-Cross n=2 K={layers // 2}": lambda: build_xcross(target_sources, XCrossConfig(top_k_layers=layers // 2)),
        "target LoRA": lambda: Scorer(load_backbone(record["backbone"]), ScorerConfig(**record["scorer"])),
    }


def train_config(**extra):
    from xcross_lib.training import TrainConfig

    known = inspect.signature(TrainConfig).parameters
    settings = dict(learning_rate=3e-4, epochs=1, batch_size=8, train_candidates=30, max_length=128, bf16=bf16_used(),
                    log_every=1, checkpoint_every=10**9, seed=0, warmup_ratio=0.0)
    settings.update({k: v for k, v in extra.items() if k in known})
    return TrainConfig(**settings), all(k in known for k in extra)


def bf16_used() -> bool:
    from xcross_lib.training.trainer import cpu_has_bf16

    setting = PRECISION["bf16"]
    return cpu_has_bf16() if setting == "auto" else bool(setting)


def user_steps_per_s(model, data, config, steps: int, warmup: int, epoch: int = 0) -> dict:
    """Median user-steps per second over the timed steps of `epoch` (0: the first visit of every
    user; 1: the second, where whatever is cached per segment is there already)."""
    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.models.scorer import scorer_config_of
    from xcross_lib.training import train_scorer

    train = data.frames["train"].sort_values("user").head(config.batch_size * (steps + warmup)).reset_index(drop=True)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, config.max_length, scorer_config_of(model).encoding)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train_scorer(model, encoder, train, None, config, out, progress=False,
                              stop_after_steps=(epoch + 1) * (steps + warmup))
        wall = time.perf_counter() - started
    curve = result.curve[result.curve["epoch"] == epoch]
    per_step = curve["examples_per_s"].to_numpy()[warmup if epoch == 0 else 0:]  # one point per step (log_every = 1)
    return {"user_steps_per_s": round(float(np.median(per_step)), 3),
            "user_steps_per_s_range": [round(float(per_step.min()), 3), round(float(per_step.max()), 3)],
            "s_per_user_step": round(float(1 / np.median(per_step)), 4), "timed_steps": len(per_step),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "wall_s": round(wall, 1)}


def eval_scores(model, data, users: int) -> np.ndarray:
    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.models.scorer import scorer_config_of
    from xcross_lib.training import score_candidates

    test = data.frames["test"].sort_values("user").head(users).reset_index(drop=True)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, 128, scorer_config_of(model).encoding)
    return score_candidates(model, encoder, test, bf16=False, progress=False)


def training_path_scores(model, data, users: int = 8) -> np.ndarray:
    """Scores of the first training users' lists through the training forward (model(**batch),
    each distinct title once where this code offers it), without dropout: what a training step
    computes, comparable across commits."""
    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.models.scorer import scorer_config_of

    encoder = PromptEncoder(model.tokenizer, data.domain.titles, 128, scorer_config_of(model).encoding)
    rows = data.frames["train"].sort_values("user").head(users)
    args = (rows["history"].tolist(), rows["candidates"].tolist(), rows["target_index"].tolist())
    extra = {"distinct_candidates": True} if "distinct_candidates" in inspect.signature(encoder.batch).parameters else {}
    model.eval()
    with torch.no_grad():
        return model(**encoder.batch(*args, **extra).model_inputs()).float().numpy()


def training_path_difference(model, data, users: int = 8) -> float | None:
    """Largest |score| difference between the training forward with each distinct candidate title
    encoded once and the plain one (every candidate encoded), without dropout; None where
    this code has no such option."""
    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.models.scorer import scorer_config_of

    encoder = PromptEncoder(model.tokenizer, data.domain.titles, 128, scorer_config_of(model).encoding)
    if "distinct_candidates" not in inspect.signature(encoder.batch).parameters:
        return None
    rows = data.frames["train"].sort_values("user").head(users)
    args = (rows["history"].tolist(), rows["candidates"].tolist(), rows["target_index"].tolist())
    model.eval()  # the comparison is of arithmetic: no dropout masks anywhere
    with torch.no_grad():
        plain = model(**encoder.batch(*args).model_inputs())
        distinct = model(**encoder.batch(*args, distinct_candidates=True).model_inputs())
    model.eval()
    return float((plain - distinct).abs().max())


def two_tower_figures(target: str = "Tools", sources: tuple[str, ...] = ("Sports", "Electronics"), steps: int = 6,
                      warmup: int = 2, score_users: int = 64, scores_out: str | None = None,
                      compare_with: str | None = None, scores_only: bool = False) -> list[dict]:
    from xcross_lib.experiments import DomainData
    from xcross_lib.provenance import git_commit

    torch.manual_seed(0)
    data = DomainData.load(target)
    figures, scores = [], {}
    for label, build in made_models(list(sources)).items():
        if scores_only:
            model = build()
            scores[label] = eval_scores(model, data, score_users)
            scores[f"{label} (training path)"] = training_path_scores(model, data)
            continue
        variants = [("default", {})]
        if label.startswith("X-Cross"):
            variants.append(("head frozen", {"train_head": False}))
        for variant, extra in variants:
            config, supported = train_config(**extra)
            if not supported:
                continue
            model = build()
            if variant == "default":
                scores[label] = eval_scores(model, data, score_users)
                scores[f"{label} (training path)"] = training_path_scores(model, data)
            figure = {"figure": "two_tower_train", "model": label, "variant": variant, "target": target,
                      "sources": list(sources), "batch": "8 users x 30 candidates",
                      "precision": "bf16" if bf16_used() else "float32", "cpu": torch.backends.cpu.get_cpu_capability(),
                      "commit": git_commit(short=True), **user_steps_per_s(model, data, config, steps, warmup)}
            if variant == "default":
                difference = training_path_difference(build(), data)
                if difference is not None:
                    figure["distinct_vs_plain_max_abs"] = difference
            figures.append(figure)
            print(json.dumps(figure), flush=True)
            if getattr(model, "prefix_cache", None) is not None:  # the same users again: a later epoch
                config2, _ = train_config(epochs=2, **extra)
                figure = {**figure, "variant": f"{variant}, second epoch (frozen prefix cached)",
                          **user_steps_per_s(build(), data, config2, steps, warmup, epoch=1)}
                figure.pop("distinct_vs_plain_max_abs", None)
                figures.append(figure)
                print(json.dumps(figure), flush=True)
    if scores_out:
        np.savez(scores_out, **scores)
    if compare_with:
        other = np.load(compare_with)
        for label, s in scores.items():
            if label in other:
                figure = {"figure": "two_tower_score_difference", "model": label,
                          "users": 8 if label.endswith("(training path)") else score_users,
                          "max_abs_vs_other": float(np.abs(other[label] - s).max()), "other": compare_with}
                figures.append(figure)
                print(json.dumps(figure), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="Tools")
    parser.add_argument("--sources", default="Sports,Electronics")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--score-users", type=int, default=64)
    parser.add_argument("--scores-out", default=None)
    parser.add_argument("--compare-with", default=None)
    parser.add_argument("--scores-only", action="store_true", help="only the scores (for --scores-out / --compare-with)")
    parser.add_argument("--precision", choices=["auto", "bf16", "float32"], default="auto",
                        help="auto: bf16 where the CPU has native bf16 (AVX-512 BF16 or AMX), as the trainer does")
    args = parser.parse_args()
    PRECISION["bf16"] = {"auto": "auto", "bf16": True, "float32": False}[args.precision]
    warnings.simplefilter("ignore")
    print(json.dumps({"figure": "run", "command": "python benchmarks/bench_two_tower.py " + " ".join(sys.argv[1:]),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    two_tower_figures(args.target, tuple(args.sources.split(",")), args.steps, args.warmup, args.score_users,
                      args.scores_out, args.compare_with, args.scores_only)


if __name__ == "__main__":
    main()
