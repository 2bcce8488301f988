"""How many aten operations one X-Cross training step dispatches: on a GPU each is a launch and
its overhead, so this count, not the arithmetic, bounds a small model's step (docs/results.md, the
H200 run). Counted with torch.profiler on a real training batch of the target (the trainer's own
candidate sampling and encoding), the head frozen, float32, on this CPU.

    .venv/bin/python benchmarks/op_count.py --target Tools --sources Sports,Electronics --users 2
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.experiments import DomainData, build_xcross, resolve_sources
from xcross_lib.models.scorer import multiple_choice_loss, scorer_config_of, set_head_trainable
from xcross_lib.models.xcross import XCrossConfig
from xcross_lib.training.trainer import training_candidates


def aten_ops(fn) -> tuple[int, object]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="Tools")
    parser.add_argument("--sources", default="Sports,Electronics")
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=30)
    args = parser.parse_args()
    data = DomainData.load(args.target)
    model = build_xcross(resolve_sources(args.sources, data.domain.name), XCrossConfig(), 0)
    set_head_trainable(model, False)
    model.train()
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, 128, scorer_config_of(model).encoding)
    rows = list(data.frames["train"].head(args.users).itertuples(index=False))
    picked = [training_candidates(r, args.candidates, 0, 0) for r in rows]
    batch = encoder.batch([r.history for r in rows], [c for c, _ in picked], [t for _, t in picked],
                          distinct_candidates=True)
    forward, scores = aten_ops(lambda: model(**batch.model_inputs()))
    loss = multiple_choice_loss(scores, batch.n_candidates, batch.target_index)
    backward, _ = aten_ops(loss.backward)
    print(f"{args.target} <- {args.sources}, {args.users} users x {args.candidates} candidates: "
          f"aten operations forward {forward:,}, backward {backward:,}")


if __name__ == "__main__":
    main()
