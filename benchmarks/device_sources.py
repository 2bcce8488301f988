"""Train the four source models on a lent GPU within a time budget; score the zero-shot matrix there.

    XCROSS_DATA_DIR=<data> python benchmarks/device_sources.py --out <dir> --train-budget-s 330

A short throughput probe at the start sizes the number of epochs so that every domain fits the
budget (at most --max-epochs; fewer training users when even one epoch does not fit). Each
finished model is packed at once as <out>/source_<Domain>.tar.gz (adapter, head, source.json with
the learning curve), so a run stopped at its time limit keeps what finished. Then, on the same
device: every source on every target's seeded test subset (bf16), the text-similarity row of each
target, and the in-domain paired t-tests, into <out>/zero_shot_device.csv. The committed matrix is
recomputed on the CPU from the packed models (notebooks/02_zero_shot.ipynb); this one is the
cross-check. Everything is printed as it happens; a phase that fails is reported and the next runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xcross_lib.data import resolve_domains
from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.experiments import DomainData, seeded_subset, train_source_model
from xcross_lib.metrics import paired_ttest, per_user_metrics, summarize
from xcross_lib.models import Scorer, ScorerConfig, load_backbone
from xcross_lib.models.source import load_source
from xcross_lib.paths import outputs_dir
from xcross_lib.provenance import write_json_atomic
from xcross_lib.training import TrainConfig, evaluate_scorer, train_scorer

STARTED = time.perf_counter()


def log(*parts) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s]", *parts, flush=True)


def n_examples(data: DomainData, prefix_min_history: int | None, n_users: int | None) -> int:
    users = data.frames["train"]["user"]
    lengths = np.array([len(data.domain.sequences[int(u)]) for u in users])
    per_user = np.clip(lengths - prefix_min_history, 0, None) if prefix_min_history else np.ones_like(lengths)
    share = 1.0 if n_users is None else min(1.0, n_users / len(users))
    return int(per_user.sum() * share)


def probe_rate(data: DomainData, scorer_config: ScorerConfig, train_config: TrainConfig, steps: int) -> float:
    """Training examples per second, measured on `steps` optimizer steps after a warm-up window."""
    backbone = load_backbone("minilm", seed=train_config.seed)
    model = Scorer(backbone, scorer_config)
    encoder = PromptEncoder(backbone.tokenizer, data.domain.titles, train_config.max_length, scorer_config.encoding)
    probe = TrainConfig(**{**train_config.to_dict(), "log_every": steps // 3, "epochs": 1})
    with tempfile.TemporaryDirectory() as tmp:
        result = train_scorer(model, encoder, data.frames["train"], None, probe, tmp, progress=False,
                              stop_after_steps=steps)
    rates = result.curve["examples_per_s"].tolist()
    log("probe windows (examples/s):", [round(r, 1) for r in rates])
    return float(np.median(rates[1:]))


def pack(domain: str, out: Path, extra: dict) -> None:
    folder = outputs_dir() / "sources" / domain
    record_path = folder / "source.json"
    record = json.loads(record_path.read_text())
    record.update(extra)
    write_json_atomic(record_path, record)
    with tarfile.open(out / f"source_{domain}.tar.gz", "w:gz") as tar:
        for name in ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", "source.json"):
            tar.add(folder / name, arcname=f"{domain}/{name}")
        if (folder / "run" / "curve.json").is_file():
            tar.add(folder / "run" / "curve.json", arcname=f"{domain}/curve.json")


def device_matrix(domains, data, n_test_users: int, seed: int, max_length: int, out: Path) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tests = {t: seeded_subset(data[t].frames["test"], n_test_users, seed) for t in domains}
    rows, per_user = [], {}
    backbone = load_backbone("minilm")
    from xcross_lib.baselines import text_similarity_scores

    backbone.model.to(device).eval()
    for t in domains:
        encoder = PromptEncoder(backbone.tokenizer, data[t].domain.titles, max_length)
        scores = text_similarity_scores(backbone.model, encoder, tests[t], bf16=True, progress=False)
        per_user[("text similarity", t)] = per_user_metrics(scores, tests[t]["target_index"].to_numpy(), tests[t]["user"].to_numpy())
        rows.append({"source": "text similarity", "target": t, **summarize(per_user[("text similarity", t)]).round(2).to_dict()})
    for s in domains:
        model = load_source(s).to(device)
        for t in domains:
            encoder = PromptEncoder(model.tokenizer, data[t].domain.titles, max_length, model.config.encoding)
            per_user[(s, t)] = evaluate_scorer(model, encoder, tests[t], batch_users=64, bf16=True, progress=False)
            row = {"source": s, "target": t, **summarize(per_user[(s, t)]).round(2).to_dict()}
            if s == t:
                for metric in ("hit@1", "mrr"):
                    row[f"p vs text similarity ({metric})"] = paired_ttest(per_user[(s, t)], per_user[("text similarity", t)], metric).p_value
            rows.append(row)
            log(json.dumps(row))
    table = pd.DataFrame(rows)
    table["n_test_users"] = n_test_users
    table["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    table.to_csv(out / "zero_shot_device.csv", index=False)
    print(table.pivot(index="source", columns="target", values="hit@1").round(2).to_string(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--domains", default="all")
    parser.add_argument("--train-budget-s", type=float, default=330)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=4e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--prefix-min-history", type=int, default=3, help="0: one example per training user")
    parser.add_argument("--train-candidates", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--n-val-users", type=int, default=1000)
    parser.add_argument("--n-test-users", type=int, default=1000)
    parser.add_argument("--probe-steps", type=int, default=30)
    parser.add_argument("--max-users", type=int, default=None, help="cap on training users per domain (smoke runs)")
    parser.add_argument("--commit", default="", help="the commit this tree was checked out at (recorded)")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--bench-streams", action="store_true", help="also run bench_streams.py on the device")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    import peft
    import transformers

    log(f"device {machine}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    domains = resolve_domains(args.domains)
    data = {d: DomainData.load(d) for d in domains}
    prefix = args.prefix_min_history or None
    scorer_config = ScorerConfig(encoding="separate", cosine_scale=2.0)
    base = TrainConfig(learning_rate=args.learning_rate, warmup_ratio=args.warmup_ratio, batch_size=args.batch_size,
                       train_candidates=args.train_candidates, max_length=args.max_length, seed=0,
                       eval_batch_users=64, checkpoint_every=500, log_every=20)
    rate = probe_rate(data[domains[0]], scorer_config, base, args.probe_steps)
    total = sum(n_examples(data[d], prefix, args.max_users) for d in domains)
    affordable = args.train_budget_s * rate
    epochs = max(1, min(args.max_epochs, int(affordable // total)))
    share = min(1.0, affordable / total)
    plan = {"examples_per_s": round(rate, 1), "examples_per_epoch_all_domains": total, "epochs": epochs,
            "user_share": round(share, 3)}
    log("plan", json.dumps(plan))
    (out / "plan.json").write_text(json.dumps(plan))
    for d in domains:
        users = len(data[d].frames["train"])
        n_users = args.max_users if share >= 1.0 else max(100, int(users * share))
        if args.max_users:
            n_users = min(n_users, args.max_users)
        n_users = None if n_users is not None and n_users >= users else n_users
        config = TrainConfig(**{**base.to_dict(), "epochs": epochs})
        command = ("python benchmarks/device_sources.py " + " ".join(sys.argv[1:])).replace(str(out), "$OUT")
        try:
            log(f"training {d}: {n_users or users} users, {epochs} epoch(s), prefix_min_history={prefix}")
            _, _, result, record = train_source_model(data[d], "minilm", scorer_config, config, n_users, args.n_val_users,
                                                      outputs_dir() / "sources" / d, command, progress=False,
                                                      prefix_min_history=prefix)
            log(f"{d}: validation", result.validation.to_dict("records"), f"wall {result.wall_s:.0f} s")
            pack(d, out, {"commit": args.commit or record["commit"], "machine": machine, "plan": plan,
                          "base_weights": "float16 copy of all-MiniLM-L6-v2 loaded as float32 (transfer limit)"})
        except Exception:
            traceback.print_exc()
    if not args.skip_matrix:
        try:
            device_matrix([d for d in domains if (outputs_dir() / "sources" / d / "source.json").is_file()],
                          data, args.n_test_users, 0, args.max_length, out)
        except Exception:
            traceback.print_exc()
    if args.bench_streams:
        for users in (1, 8):
            cmd = [sys.executable, str(Path(__file__).parent / "bench_streams.py"), "--device", device, "--users", str(users)]
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                print(run.stdout[-3000:], run.stderr[-1500:] if run.returncode else "", flush=True)
            except subprocess.TimeoutExpired:
                log("bench_streams timed out")
    log("done")


if __name__ == "__main__":
    main()
