"""bf16 autocast against float32 for the source scorer: training step and evaluation, same batch.

    .venv/bin/python benchmarks/bench_precision.py [--backbone minilm] [--users 4] [--candidates 30]
    .venv/bin/python benchmarks/bench_precision.py --source Tools --test-users 500   # a trained source model

Prints one JSON line per figure, then a short table. Ratios are measured in one run on one machine;
absolute seconds depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.models import Scorer, ScorerConfig, load_backbone, multiple_choice_loss


def made_batch(tokenizer, users: int, candidates: int, max_length: int, seed: int = 0):
    """Prompts of realistic length built from made titles (no data needed)."""
    rng = np.random.default_rng(seed)
    words = "cordless drill hammer saw level tape glue light bulb led wrench socket set steel pro kit".split()
    titles = {i: " ".join(rng.choice(words, size=8)) for i in range(200)}
    encoder = PromptEncoder(tokenizer, titles, max_length)
    histories = [list(rng.choice(200, size=6, replace=False)) for _ in range(users)]
    cands = [list(rng.choice(200, size=candidates, replace=False)) for _ in range(users)]
    return encoder.batch(histories, cands, [0] * users)


def timed(fn, repeats: int) -> float:
    """Median seconds of fn over `repeats` calls after one warm-up (CUDA work waited for)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare_on_test(source: str, n_users: int | None) -> dict:
    """Test Hit@1 of a trained source model on its own domain's test users (a seeded subset of
    n_users, or all of them for None), float32 and bf16."""
    from xcross_lib.experiments import DomainData, seeded_subset
    from xcross_lib.metrics import paired_ttest, standard_error, summarize
    from xcross_lib.models.source import load_source, read_record
    from xcross_lib.training import evaluate_scorer

    record = read_record(source)
    data = DomainData.load(record["domain"], seed=record["train_config"]["seed"])
    test = seeded_subset(data.frames["test"], n_users, record["train_config"]["seed"])
    model = load_source(source)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, record["train_config"]["max_length"], model.config.encoding)
    results = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        start = time.perf_counter()
        results[name] = evaluate_scorer(model, encoder, test, bf16=bf16, progress=False)
        results[name + "_s"] = time.perf_counter() - start
    a, b = results["float32"], results["bf16"]
    hit32, hit16, se = summarize(a)["hit@1"], summarize(b)["hit@1"], standard_error(a)
    return {"figure": "trained_source_test", "source": source, "users": len(test),
            "hit1_float32": round(hit32, 2), "hit1_bf16": round(hit16, 2), "hit1_standard_error": round(se, 2),
            "difference_in_standard_errors": round(abs(hit32 - hit16) / se, 2),
            "same_rank_share": round(float((a["rank"] == b["rank"]).mean()), 4),
            "paired_p": round(paired_ttest(a, b).p_value, 4),
            "float32_s": round(results["float32_s"], 1), "bf16_s": round(results["bf16_s"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", default=None, help="also evaluate this trained source model in both precisions")
    parser.add_argument("--test-users", type=int, default=500, help="0: every test user")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.source:
        print(json.dumps(compare_on_test(args.source, args.test_users or None)))
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone)
    model = Scorer(backbone, ScorerConfig(pooling="mean"))
    batch = made_batch(backbone.tokenizer, args.users, args.candidates, args.max_length)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step(bf16: bool):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = model(**batch.model_inputs())
        multiple_choice_loss(scores, batch.n_candidates, batch.target_index).backward()
        optimizer.zero_grad(set_to_none=True)  # no step: every timing sees the same weights

    @torch.inference_mode()
    def evaluate(bf16: bool):
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(**batch.model_inputs()).float()

    figures = []
    shape = list(batch.input_ids.shape)
    for what, fn in (("train_step", train_step), ("evaluation", evaluate)):
        t32 = timed(lambda: fn(False), args.repeats)
        t16 = timed(lambda: fn(True), args.repeats)
        figures.append({"figure": what, "backbone": args.backbone, "batch": shape, "float32_s": round(t32, 4),
                        "bf16_s": round(t16, 4), "speedup": round(t32 / t16, 2),
                        "cpu": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()})
    diff = (evaluate(True) - evaluate(False)).abs()
    scale = evaluate(False).abs().max().item()
    figures.append({"figure": "score_difference", "max_abs": round(diff.max().item(), 5),
                    "max_abs_relative_to_largest_score": round(diff.max().item() / max(scale, 1e-12), 5)})
    for f in figures:
        print(json.dumps(f))
    print(f"\n{'figure':<12} {'float32 s':>10} {'bf16 s':>8} {'speedup':>8}")
    for f in figures[:2]:
        print(f"{f['figure']:<12} {f['float32_s']:>10.3f} {f['bf16_s']:>8.3f} {f['speedup']:>8.2f}")
    print(f"largest |bf16 - float32| score difference: {figures[2]['max_abs']}")


if __name__ == "__main__":
    main()
