"""Training and evaluation speed of the source scorer and of X-Cross, on CPU or GPU, in one run.

    .venv/bin/python benchmarks/bench_speed.py                       # MiniLM and a DeBERTa-v3-base-sized model
    .venv/bin/python benchmarks/bench_speed.py --backbones minilm --device cuda
    .venv/bin/python benchmarks/bench_speed.py --backbones minilm --source Tools --test-users 0   # the issue's run

Per backbone (MiniLM; a DeBERTa-v2 model of DeBERTa-v3-base's sizes built from a config, random
weights, so the timing is real and nothing is downloaded), with made prompts of realistic length:
- training step (forward + backward) of one plain LoRA scorer, of X-Cross for n = 2 and 3 (batched
  streams), and of the same integration done with n sequential peft passes per layer
  (`xcross_lib.models.xcross.sequential`, tested equal); ratios against n plain LoRA steps;
- achieved FLOP/s of each training step (FLOPs counted by torch's FlopCounterMode) against the
  matrix-product peak of the same precision, measured in the same run;
- evaluation throughput (prompts per second) of a source model and of X-Cross, with dynamic
  padding and padded to max_length;
- float32 and bf16 autocast for all of it, with the largest score difference; for the LoRA scorer
  also the bf16 speedup from rounds that alternate the two precisions (median and range);
- peak memory: per figure on CUDA; on a CPU the process's resident high-water mark after it;
- with --source: test Hit@1 of a trained source model in float32 and bf16 (bench_precision.py);
- dropout: the LoRA scorer's training step with its dropout on, as training runs it, with torch's
  masks and with the cheap ones of `xcross_lib.models.dropout`;
- allocator: the LoRA scorer's training step with glibc's default allocator against the one the
  trainer sets (`xcross_lib.training.allocator`), each in a fresh process, MiniLM at the CPU
  recipe's 8 users x 30 candidates (the main figures use one user);
- with --two-tower (or --two-tower-only): two-tower training on the real Tools data in user-steps
  per second through the trainer, X-Cross n = 2 at K = all and K = half and a target LoRA
  (`bench_two_tower.py`, which also runs alone and times older commits).
One JSON line per figure, then a table. Ratios hold within one run on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, DebertaV2Config

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.models import Scorer, ScorerConfig, load_backbone, multiple_choice_loss
from xcross_lib.models import attention
from xcross_lib.models.backbones import Backbone, minilm_dir
from xcross_lib.models.dropout import FastDropout
from xcross_lib.models.dropout import dropout as fast_dropout
from xcross_lib.models.xcross import XCross, XCrossConfig
from xcross_lib.models.xcross.sequential import sequential_stream_states
from xcross_lib.provenance import git_commit
from xcross_lib.training.allocator import keep_freed_memory

ALLOCATOR_USERS = {"minilm": 8, "deberta-v3-base-sized": 1}  # MiniLM: the CPU recipe's batch of 8 users


def deberta_base_sized(seed: int = 0) -> Backbone:
    """DeBERTa-v3-base's shapes (12 layers, d = 768, 12 heads, FFN 3072, relative attention) with
    random weights and the MiniLM tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=512, type_vocab_size=0,
                             relative_attention=True, position_buckets=256, pos_att_type=["p2c", "c2p"],
                             position_biased_input=False)
    return Backbone("deberta-v3-base-sized", AutoModel.from_config(config), AutoTokenizer.from_pretrained(minilm_dir()))


def backbone(name: str) -> Backbone:
    return deberta_base_sized() if name == "deberta-v3-base-sized" else load_backbone(name)


def made_inputs(tokenizer, users: int, candidates: int, max_length: int, pad_to_max: bool = False, seed: int = 0,
                backbone_name: str = "minilm", device="cpu"):
    """Pair prompts of made titles, on `device`: (inputs, target indices, candidates per user).
    The DeBERTa-sized model has no token types, so it gets none."""
    rng = np.random.default_rng(seed)
    words = "cordless drill hammer saw level tape glue light bulb led wrench socket set steel pro kit".split()
    titles = {i: " ".join(rng.choice(words, size=int(rng.integers(5, 12)))) for i in range(300)}
    encoder = PromptEncoder(tokenizer, titles, max_length)
    histories = [list(rng.choice(300, size=int(rng.integers(4, 9)), replace=False)) for _ in range(users)]
    cands = [list(rng.choice(300, size=candidates, replace=False)) for _ in range(users)]
    batch = encoder.batch(histories, cands, [0] * users)
    inputs = batch.model_inputs()
    if pad_to_max:
        pad = max_length - inputs["input_ids"].shape[1]
        inputs = {k: torch.nn.functional.pad(v, (0, pad), value=encoder.pad_id if k == "input_ids" else 0)
                  for k, v in inputs.items()}
    if backbone_name == "deberta-v3-base-sized":
        inputs.pop("token_type_ids", None)
    return {k: v.to(device) for k, v in inputs.items()}, batch.target_index.to(device), candidates


def sources_for(name: str, n: int):
    out = []
    for s in range(n):
        torch.manual_seed(100 + s)
        model = Scorer(backbone(name), ScorerConfig(pooling="mean"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.normal_(0, 0.02)
        out.append(model)
    return out


class SequentialXCross(torch.nn.Module):
    """X-Cross's forward with the streams run by n separate peft models, layer by layer."""

    def __init__(self, xcross: XCross, sources):
        super().__init__()
        self.xcross, self.sources = xcross, sources

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = sequential_stream_states(self.xcross, self.sources, input_ids, attention_mask, token_type_ids)
        hidden = torch.einsum("n,nbtd->btd", self.xcross.stream_weights.to(h.dtype), h)
        return self.xcross.head(hidden, attention_mask, token_type_ids)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def autocast(device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def matmul_peak(device, dtype, size: int, repeats: int) -> float:
    """FLOP/s of the best of `repeats` square matrix products of the given precision."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, 1, device) for _ in range(repeats))
    return 2 * size**3 / best


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train_step(model, inputs, targets, n_candidates, device, bf16: bool, dropout: bool = False):
    """One training step (forward, loss, backward) of `model` as a function; dropout off unless asked."""
    model.train()
    for module in model.modules():  # the comparison is of arithmetic, not of dropout masks (but see dropout_figure)
        if isinstance(module, torch.nn.Dropout) and not dropout:
            module.p = 0.0

    def step():
        with autocast(device, bf16):
            scores = model(**inputs)
        loss = multiple_choice_loss(scores, n_candidates, targets)
        loss.backward()
        for p in model.parameters():
            p.grad = None
    return step


def measure_step(model, inputs, targets, n_candidates, device, bf16: bool, repeats: int, dropout: bool = False) -> dict:
    step = train_step(model, inputs, targets, n_candidates, device, bf16, dropout)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, repeats, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return {"step_s": seconds, "flops": counter.get_total_flops(), "peak_memory_mb": round(peak_memory_mb(device), 1)}


def paired_bf16_speedup(model, inputs, targets, n_candidates, device, rounds: int, steps: int = 3) -> dict:
    """float32 step time over bf16 step time, measured in `rounds` alternating rounds of `steps`
    steps each, so that a slow spell of the machine falls on both precisions; the median of the
    per-round ratios and their range."""
    float32 = train_step(model, inputs, targets, n_candidates, device, bf16=False)
    bf16 = train_step(model, inputs, targets, n_candidates, device, bf16=True)
    ratios = []
    for _ in range(rounds):
        seconds = [timed(fn, steps, device) for fn in (float32, bf16)]
        ratios.append(seconds[0] / seconds[1])
    return {"float32_over_bf16_paired": round(float(np.median(ratios)), 3),
            "paired_range": [round(min(ratios), 3), round(max(ratios), 3)], "paired_rounds": rounds}


@torch.inference_mode()
def eval_scores(model, inputs, device, bf16: bool):
    model.eval()
    with autocast(device, bf16):
        return model(**inputs).float()


class Figures(list):
    """Figures, each printed as a JSON line the moment it is measured (a long run shows progress,
    and a run stopped half-way keeps what it measured)."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device

    def append(self, figure: dict) -> None:
        super().append(figure)
        print(json.dumps({**figure, "device": self.device, "threads": torch.get_num_threads()}), flush=True)


def lora_step_figure(name: str, users: int, candidates: int, max_length: int, repeats: int, device) -> dict:
    """Training-step seconds of the LoRA scorer in both precisions, for the child processes."""
    model = sources_for(name, 1)[0].to(device)
    inputs, targets, n_cand = made_inputs(model.tokenizer, users, candidates, max_length, backbone_name=name, device=device)
    out = {"batch": list(inputs["input_ids"].shape)}
    for precision in ("float32", "bf16"):
        out[f"{precision}_step_s"] = measure_step(model, inputs, targets, n_cand, device, precision == "bf16", repeats)["step_s"]
    return out


@contextlib.contextmanager
def torch_dropout(model):
    """Inside: the model's dropout draws torch's own masks (nn.Dropout, F.dropout on the attention
    weights) instead of those of xcross_lib.models.dropout; the attention path stays the same."""
    fast = [m for m in model.modules() if isinstance(m, FastDropout)]
    for m in fast:
        m.__class__ = torch.nn.Dropout
    attention.fast_dropout = torch.nn.functional.dropout
    try:
        yield
    finally:
        for m in fast:
            m.__class__ = FastDropout
        attention.fast_dropout = fast_dropout


def dropout_figure(name: str, inputs, targets, n_cand, device, repeats: int) -> dict:
    """The LoRA step as training runs it, dropout on (the backbone's, LoRA's, the head's), with
    torch's masks and with the cheap ones."""
    model = sources_for(name, 1)[0].to(device)
    figure = {"figure": "dropout", "backbone": name, "model": "LoRA scorer", "batch": list(inputs["input_ids"].shape)}
    for precision in ("float32", "bf16"):
        with torch_dropout(model):
            before = measure_step(model, inputs, targets, n_cand, device, precision == "bf16", repeats, dropout=True)
        after = measure_step(model, inputs, targets, n_cand, device, precision == "bf16", repeats, dropout=True)
        torch_masks, cheap_masks = round(before["step_s"], 4), round(after["step_s"], 4)  # the ratio of what is printed
        figure.update({f"{precision}_step_s_torch_masks": torch_masks, f"{precision}_step_s_cheap_masks": cheap_masks,
                       f"{precision}_torch_over_cheap": round(torch_masks / cheap_masks, 3)})
    figure["float32_over_bf16_cheap_masks"] = round(figure["float32_step_s_cheap_masks"] / figure["bf16_step_s_cheap_masks"], 3)
    return figure


def allocator_figure(name: str, args) -> dict:
    """The LoRA step with glibc's default allocator and with keep_freed_memory, each in a fresh process."""
    figure = {"figure": "allocator", "backbone": name, "model": "LoRA scorer"}
    for label, malloc in (("default", "default"), ("kept", "")):
        command = [sys.executable, __file__, "--child-step", name, "--users", str(ALLOCATOR_USERS.get(name, 1)),
                   "--candidates", str(args.candidates), "--max-length", str(args.max_length), "--repeats", "3"]
        done = subprocess.run(command, env={**os.environ, "XCROSS_MALLOC": malloc}, capture_output=True, text=True, check=True)
        child = json.loads(done.stdout.strip().splitlines()[-1])
        figure["batch"] = child.pop("batch")
        figure.update({f"{k}_{label}": round(v, 4) for k, v in child.items()})
    for precision in ("float32", "bf16"):
        figure[f"{precision}_default_over_kept"] = round(figure[f"{precision}_step_s_default"] / figure[f"{precision}_step_s_kept"], 3)
    return figure


def run(args) -> list[dict]:
    device = torch.device(args.device)
    figures = Figures(args.device)
    figures.append({"figure": "run", "command": "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:]),
                    "commit": git_commit(short=True), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None})
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does; the allocator figure measures what it changes
    if args.source:
        from bench_precision import compare_on_test  # this folder is on the path when run as a script

        figures.append(compare_on_test(args.source, args.test_users or None))
    peaks = {}
    for precision, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[precision] = matmul_peak(device, dtype, args.matmul_size, 5)
        figures.append({"figure": "matmul_peak", "precision": precision, "size": args.matmul_size,
                        "tflops": round(peaks[precision] / 1e12, 3)})
    for name in args.backbones:
        srcs = sources_for(name, max(args.sources)).copy()
        srcs = [s.to(device) for s in srcs]
        inputs, targets, n_cand = made_inputs(srcs[0].tokenizer, args.users, args.candidates, args.max_length,
                                              backbone_name=name, device=device)
        shape = list(inputs["input_ids"].shape)
        attn_implementation = srcs[0].encoder.base_model.model.config._attn_implementation
        step_s = {}  # (model, precision) -> seconds
        for precision in ("float32", "bf16"):
            bf16 = precision == "bf16"
            lora = measure_step(srcs[0], inputs, targets, n_cand, device, bf16, args.repeats)
            step_s["LoRA scorer", precision] = lora["step_s"]
            figures.append({"figure": "train_step", "backbone": name, "model": "LoRA scorer", "precision": precision,
                            "batch": shape, "attention": attn_implementation, **lora, "of_peak": round(lora["flops"] / lora["step_s"] / peaks[precision], 3)})
            for n in args.sources:
                xcross = XCross(backbone(name), srcs[:n], XCrossConfig()).to(device)
                with torch.no_grad():
                    for integrator in xcross.integrators.values():
                        integrator.scaling.weight.normal_(0, 0.01)
                batched = measure_step(xcross, inputs, targets, n_cand, device, bf16, args.repeats)
                for s in srcs[:n]:
                    s.eval()
                sequential = measure_step(SequentialXCross(xcross, srcs[:n]), inputs, targets, n_cand, device, bf16,
                                          args.repeats)
                step_s[f"X-Cross n={n}", precision] = batched["step_s"]
                figures.append({"figure": "train_step", "backbone": name, "model": f"X-Cross n={n}", "precision": precision,
                                "batch": shape, **batched,
                                "of_peak": round(batched["flops"] / batched["step_s"] / peaks[precision], 3),
                                "over_n_lora_steps": round(batched["step_s"] / (n * lora["step_s"]), 3),
                                "sequential_peft_step_s": sequential["step_s"],
                                "sequential_over_batched": round(sequential["step_s"] / batched["step_s"], 3)})
                del xcross
        for model in dict.fromkeys(m for m, _ in step_s):
            paired = (paired_bf16_speedup(srcs[0], inputs, targets, n_cand, device, args.repeats)
                      if model == "LoRA scorer" else {})
            figures.append({"figure": "bf16_speedup", "backbone": name, "model": model, "what": "train_step",
                            "float32_over_bf16": round(step_s[model, "float32"] / step_s[model, "bf16"], 3), **paired})
        if device.type == "cpu":
            figures.append(dropout_figure(name, inputs, targets, n_cand, device, args.repeats))
        if device.type == "cpu" and not args.no_allocator:
            figures.append(allocator_figure(name, args))
        # evaluation throughput and bf16 against float32
        xcross = XCross(backbone(name), srcs[:2], XCrossConfig()).to(device)
        padded, _, _ = made_inputs(srcs[0].tokenizer, args.users, args.candidates, args.max_length, pad_to_max=True,
                                   backbone_name=name, device=device)
        for label, model in (("source model", srcs[0]), ("X-Cross n=2", xcross)):
            scores = {}
            for precision in ("float32", "bf16"):
                bf16 = precision == "bf16"
                for padding, batch in (("dynamic", inputs), ("max_length", padded)):
                    seconds = timed(lambda: eval_scores(model, batch, device, bf16), args.repeats, device)
                    figures.append({"figure": "eval_throughput", "backbone": name, "model": label, "precision": precision,
                                    "padding": padding, "batch": list(batch["input_ids"].shape),
                                    "prompts_per_s": round(batch["input_ids"].shape[0] / seconds, 1)})
                scores[precision] = eval_scores(model, inputs, device, bf16)
            figures.append({"figure": "bf16_score_difference", "backbone": name, "model": label,
                            "max_abs": round((scores["float32"] - scores["bf16"]).abs().max().item(), 5),
                            "max_abs_score": round(scores["float32"].abs().max().item(), 5)})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["minilm", "deberta-v3-base-sized"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--sources", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--source", default=None, help="also evaluate this trained source model (name or folder) in both precisions")
    parser.add_argument("--test-users", type=int, default=0, help="test users for --source; 0: all")
    parser.add_argument("--no-allocator", action="store_true", help="skip the allocator figure (two child processes)")
    parser.add_argument("--two-tower", action="store_true", help="also the two-tower training figures (bench_two_tower.py)")
    parser.add_argument("--two-tower-only", action="store_true", help="only the two-tower training figures")
    parser.add_argument("--child-step", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child_step:  # one allocator measurement, in its own process
        keep_freed_memory()  # does nothing with XCROSS_MALLOC=default
        print(json.dumps(lora_step_figure(args.child_step, args.users, args.candidates, args.max_length, args.repeats,
                                          torch.device("cpu"))))
        return
    if args.two_tower_only:
        from bench_two_tower import two_tower_figures  # this folder is on the path when run as a script

        two_tower_figures()
        return
    figures = run(args)
    if args.two_tower:
        from bench_two_tower import two_tower_figures

        figures.extend(two_tower_figures())
    print()
    for f in figures:
        if f["figure"] == "trained_source_test":
            print(f"{f['source']} test Hit@1 over {f['users']} users: float32 {f['hit1_float32']:.2f}, bf16 "
                  f"{f['hit1_bf16']:.2f} ({f['difference_in_standard_errors']:.2f} standard errors apart)")
        if f["figure"] == "train_step":
            extra = (f"  x(n LoRA) {f['over_n_lora_steps']:.2f}  sequential/batched {f['sequential_over_batched']:.2f}"
                     if "over_n_lora_steps" in f else "")
            print(f"{f['backbone']:>22} {f['model']:>12} {f['precision']:>7}: step {f['step_s']:.3f} s, "
                  f"{f['of_peak']:.0%} of peak{extra}")
        if f["figure"] == "dropout":
            print(f"{f['backbone']:>22} dropout on, LoRA step: torch's masks / cheap masks {f['float32_torch_over_cheap']:.2f} "
                  f"(float32), {f['bf16_torch_over_cheap']:.2f} (bf16); bf16 {f['float32_over_bf16_cheap_masks']:.2f} x float32")
        if f["figure"] == "allocator":
            print(f"{f['backbone']:>22} allocator, LoRA step at {f['batch']}: glibc default / kept freed memory "
                  f"{f['float32_default_over_kept']:.2f} (float32), {f['bf16_default_over_kept']:.2f} (bf16)")
        if f["figure"] == "bf16_speedup":
            paired = (f" (paired rounds: median {f['float32_over_bf16_paired']:.2f}, range {f['paired_range'][0]:.2f}-"
                      f"{f['paired_range'][1]:.2f})" if "paired_range" in f else "")
            print(f"{f['backbone']:>22} {f['model']:>12}: bf16 training step {f['float32_over_bf16']:.2f} x faster than float32{paired}")


if __name__ == "__main__":
    main()
