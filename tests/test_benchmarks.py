"""The speed benchmark end to end on a tiny model: every figure present and consistent."""

import json
import subprocess
import sys

import pytest

from xcross_lib.data.paths import REPO_ROOT

pytestmark = pytest.mark.smoke


def test_bench_speed_on_a_tiny_model():
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_speed.py"), "--backbones", "tiny-bert",
               "--sources", "2", "--repeats", "1", "--matmul-size", "256", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=600)
    figures = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    by_kind = {}
    for f in figures:
        by_kind.setdefault(f["figure"], []).append(f)
    assert by_kind["run"][0]["command"].endswith("--device cpu") and by_kind["run"][0]["commit"]
    steps = {(f["model"], f["precision"]): f for f in by_kind["train_step"]}
    assert set(steps) == {(m, p) for m in ("LoRA scorer", "X-Cross n=2") for p in ("float32", "bf16")}
    for precision in ("float32", "bf16"):
        lora, xcross = steps["LoRA scorer", precision], steps["X-Cross n=2", precision]
        # two streams through the same backbone: near twice the plain model's arithmetic (less the frozen
        # adapters' weight gradients, plus the integrators; 1.65 for this tiny model, 1.86 for MiniLM)
        assert 1.5 < xcross["flops"] / lora["flops"] < 2.5
        assert xcross["over_n_lora_steps"] == pytest.approx(xcross["step_s"] / (2 * lora["step_s"]), rel=1e-2)
        assert xcross["sequential_over_batched"] == pytest.approx(xcross["sequential_peft_step_s"] / xcross["step_s"], rel=1e-2)
    speedups = {f["model"]: f["float32_over_bf16"] for f in by_kind["bf16_speedup"]}
    paired = next(f for f in by_kind["bf16_speedup"] if f["model"] == "LoRA scorer")
    low, high = paired["paired_range"]
    assert paired["paired_rounds"] == 1 and low == high == paired["float32_over_bf16_paired"] > 0  # one round: its ratio
    assert speedups["LoRA scorer"] == pytest.approx(  # the figure is printed to 3 decimals
        steps["LoRA scorer", "float32"]["step_s"] / steps["LoRA scorer", "bf16"]["step_s"], rel=1e-2, abs=1e-3)
    allocator = by_kind["allocator"][0]
    assert allocator["float32_default_over_kept"] == pytest.approx(
        allocator["float32_step_s_default"] / allocator["float32_step_s_kept"], rel=2e-2)
    drop = by_kind["dropout"][0]
    assert drop["bf16_torch_over_cheap"] == pytest.approx(drop["bf16_step_s_torch_masks"] / drop["bf16_step_s_cheap_masks"], rel=2e-2)
    assert {f["padding"] for f in by_kind["eval_throughput"]} == {"dynamic", "max_length"}
    assert all(f["max_abs"] < 0.05 * max(f["max_abs_score"], 1.0) for f in by_kind["bf16_score_difference"])
