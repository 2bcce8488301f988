"""X-Cross's batched streams against n sequential peft passes of the same adapters.

    .venv/bin/python benchmarks/bench_streams.py [--backbone minilm] [--sources 2] [--users 1]

With lambda1 = lambda2 = 0 the n integrated streams must equal the n source models run alone;
the script prints the largest difference and the time of one batched call (n*B rows, stacked
adapters) against n separate peft calls, for inference and for a training step (X-Cross's
trainable parameters only in both). JSON lines, then a short table.
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from xcross_lib.models import Scorer, ScorerConfig, load_backbone
from xcross_lib.models.xcross import XCross, XCrossConfig

from bench_precision import made_batch, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where there is a GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.simplefilter("ignore")
    sources = []
    for s in range(args.sources):
        torch.manual_seed(s)
        model = Scorer(load_backbone(args.backbone), ScorerConfig(pooling="mean"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.normal_(0, 0.02)
        sources.append(model.eval().to(device))
    xcross = XCross(load_backbone(args.backbone), sources, XCrossConfig(lambda1=0.0, lambda2=0.0)).eval().to(device)
    batch = made_batch(xcross.tokenizer, args.users, args.candidates, args.max_length).to(device)
    inputs = {k: v for k, v in batch.model_inputs().items() if k != "token_type_ids"}

    with torch.inference_mode():
        batched = xcross.stream_states(**inputs)
        sequential = torch.stack([s.encoder(**inputs).last_hidden_state for s in sources])
    difference = (batched - sequential).abs().max().item()

    def batched_eval():
        with torch.inference_mode():
            xcross.stream_states(**inputs)

    def sequential_eval():
        with torch.inference_mode():
            for s in sources:
                s.encoder(**inputs)

    t_batched, t_sequential = timed(batched_eval, args.repeats), timed(sequential_eval, args.repeats)
    figures = [
        {"figure": "streams_equal_peft", "max_abs_difference": difference, "sources": args.sources,
         "streams_differ_by": (batched[0] - batched[1]).abs().max().item()},  # the adapters do act
        {"figure": "inference", "batch": list(batch.input_ids.shape), "sources": args.sources,
         "batched_s": round(t_batched, 4), "sequential_peft_s": round(t_sequential, 4),
         "sequential_over_batched": round(t_sequential / t_batched, 2), "threads": torch.get_num_threads(),
         "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
    ]
    for f in figures:
        print(json.dumps(f))
    print(f"\nlargest |batched - sequential peft| hidden-state difference: {difference:.2e}")
    print(f"inference: batched {t_batched:.3f} s, {args.sources} sequential peft passes {t_sequential:.3f} s, "
          f"ratio {t_sequential / t_batched:.2f}")


if __name__ == "__main__":
    main()
