"""Issue 14's learning curve on a lent GPU: the points of params/grids/learning_curve.yaml through the
library calls that notebook 11 makes, in the order of --sizes (largest first puts the points that a
CPU cannot reach first), within a time budget.

    XCROSS_DATA_DIR=<data> XCROSS_MINILM_DIR=<weights> python benchmarks/device_learning_curve.py \\
        --out <dir> --budget-s 480 --targets Tools,Toys --sizes 100,300,1000,3000,all

Every setting is notebook 11's default (its `parameters` cell, read without papermill) except
`bf16: true`, which is part of each point's definition: a device point never shares a folder, or a
digest, with a CPU point of the same settings. Each point's record names the device. Points are
written under <out>/outputs the way the notebook writes them (xcross/..., reference/...); after
each finished point <archive>/learning_curve_device.tar.gz (default <out>) is rewritten with the
shipped points and the tables, so a call stopped at its limit keeps what finished. Here, `tar -xzf
learning_curve_device.tar.gz -C outputs/reference learning_curve` adds the points beside the CPU
ones (other digests; rows name their `device`), and notebook 11 run on a finished point rewrites the
tables with them. A point is not started when, at its model's pace measured so far (else the slowest
pace seen), it would end past the budget (the first one always starts); later, smaller points still run.
Copying the committed outputs/reference/learning_curve under <out>/outputs/reference first lets the
device reuse the committed reference rows (same definition) instead of scoring them again.

On the device machine (the data and a MiniLM copy carried in an ignored folder, e.g. `.device/`):

    python benchmarks/device_learning_curve.py --prepare .device        # here: data + float16 weights copy
    mkdir -p /tmp/lc/outputs/reference && cp -r outputs/reference/learning_curve /tmp/lc/outputs/reference/
    XCROSS_DATA_DIR=.device/data XCROSS_MINILM_DIR=.device/minilm PYTHONUNBUFFERED=1 \\
        python benchmarks/device_learning_curve.py --out /tmp/lc --archive $OUT --budget-s 430 \\
        --targets Toys,Tools --sizes 3000,1000,300,100   # the whole Toys split did not fit one call on an H200
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STARTED = time.perf_counter()


def log(*parts) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s]", *parts, flush=True)


def notebook_defaults(name: str = "11_learning_curve") -> dict:
    """{name: value} of the notebook's cell tagged `parameters` (literal assignments only)."""
    notebook = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    (cell,) = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def prepare(folder: Path) -> None:
    """Copy the data and a float16 copy of the MiniLM weights (the transfer limit) into folder."""
    import torch
    from safetensors.torch import load_file, save_file

    from xcross_lib.data.paths import find_data_dir
    from xcross_lib.models.backbones import minilm_dir

    shutil.copytree(find_data_dir(), folder / "data", dirs_exist_ok=True)
    weights = minilm_dir()
    (folder / "minilm").mkdir(parents=True, exist_ok=True)
    for file in weights.iterdir():
        if file.suffix == ".safetensors":
            save_file({k: v.to(torch.float16) for k, v in load_file(file).items()}, folder / "minilm" / file.name)
        elif file.is_file() and file.suffix != ".bin":
            shutil.copyfile(file, folder / "minilm" / file.name)
    log("prepared", folder, f"{sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


def pack(out: Path, outputs: Path) -> None:
    """The shipped points (learning_curve/<curve>/<point>/) and the tables, in one archive."""
    reference = outputs / "reference"
    tmp = out / ".learning_curve_device.tar.gz"
    with tarfile.open(tmp, "w:gz") as tar:
        if (reference / "learning_curve").is_dir():
            tar.add(reference / "learning_curve", arcname="learning_curve")
        for table in sorted(reference.glob("*learning_curve_*.csv")):
            tar.add(table, arcname=f"tables/{table.name}")
    tmp.replace(out / "learning_curve_device.tar.gz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--archive", type=Path, help="folder for learning_curve_device.tar.gz (default: --out)")
    parser.add_argument("--prepare", type=Path, help="copy the data and the MiniLM weights here, then stop")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--targets", default="Tools,Toys")
    parser.add_argument("--sizes", default="100,300,1000,3000,all", help="training users per point; all: the whole split")
    parser.add_argument("--models", default="X-Cross (head frozen),LoRA")
    parser.add_argument("--sources", default="Sports,Electronics")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook-11 parameter other than its default (e.g. -p batch_size 32)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare(args.prepare)
    if args.out is None:
        parser.error("--out is needed (or --prepare)")

    import torch
    import yaml

    from xcross_lib import learning_curve as lc
    from xcross_lib.checks import check_values
    from xcross_lib.models import ScorerConfig
    from xcross_lib.models.xcross import XCrossConfig
    from xcross_lib.training import TrainConfig

    defaults = notebook_defaults()
    overrides = {"bf16": True, "write_reference": True}
    for name, value in args.p:
        if name not in defaults:
            parser.error(f"notebook 11 has no parameter {name!r}")
        overrides[name] = yaml.safe_load(value)
    check_values("11_learning_curve.ipynb", overrides, defaults)  # the notebook's own rules: a clear error, not a run
    params = {**defaults, **overrides}
    common = {k: params[k] for k in ("warmup_ratio", "batch_size", "train_candidates", "max_length", "seed", "bf16",
                                     "validate_every", "select_metric", "checkpoint_every", "checkpoint_every_s")}
    xcross_config = XCrossConfig(top_k_layers=params["top_k_layers"], lambda1=params["lambda1"],
                                 lambda2=params["lambda2"], parametrisation=params["parametrisation"])
    out, outputs = args.out.resolve(), args.out.resolve() / "outputs"
    out.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers

    log("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch", torch.__version__,
        "transformers", transformers.__version__, "peft", peft.__version__)
    archive = (args.archive or out).resolve()
    archive.mkdir(parents=True, exist_ok=True)
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    points = [(size, target, model) for size in sizes for target in args.targets.split(",")
              for model in args.models.split(",")]  # in the order of --sizes, every target at one size before the next
    given = {str(args.out): "<out>", str(out): "<out>"}
    if args.archive:
        given.update({str(args.archive): "$OUT", str(archive): "$OUT"})
    command = "python benchmarks/device_learning_curve.py " + " ".join(given.get(a, a) for a in (argv or sys.argv[1:]))
    setups, examples_per_s = {}, {}  # per model: X-Cross runs two backbones, LoRA one
    for size, target, model in points:
        if target not in setups:
            setups[target] = lc.curve_setup(target, args.sources, None, params["seed"], params["user_fraction"],
                                            params["n_val_users"], params["n_test_users"], params["max_length"], outputs)
        setup = setups[target]
        n_users, epochs = setup.size_and_epochs(size, params["epochs"], params["min_examples"], params["max_epochs"],
                                                params["seed"])
        pace = examples_per_s.get(model) or (min(examples_per_s.values()) if examples_per_s else None)
        if pace and time.perf_counter() - STARTED + n_users * epochs / pace > args.budget_s:
            log(f"not started: {model} on {n_users} {target} users ({n_users * epochs} examples at "
                f"{pace:.1f}/s would pass the budget)")
            continue
        started = time.perf_counter()
        log(f"{model} on {n_users} {target} users, {epochs} epoch(s)")
        record = lc.train_point(
            model, setup.data, setup.source_names, setup.head_from, size, xcross_config,
            TrainConfig(learning_rate=params["learning_rate"], head_learning_rate=params["head_learning_rate"],
                        epochs=epochs, **common),
            TrainConfig(learning_rate=params["lora_learning_rate"], epochs=epochs, **common),
            ScorerConfig(encoding=params["lora_encoding"]), setup.backbone, setup.val, setup.test, setup.root,
            command, progress=False, ship=True, output_dir=outputs)
        wall = time.perf_counter() - started
        examples_per_s[model] = n_users * epochs / wall  # validation and test scoring included: a whole point's pace
        log(f"  kept step {record['kept_step']} of {record['steps']}, validation {record['validation_best']:.2f}, "
            f"{wall:.0f} s ({examples_per_s[model]:.1f} examples/s)")
        table, _, answer = lc.write_curve_tables(setup, xcross_config, params["primary_metric"], params["max_length"],
                                                 params["seed"], command, time.perf_counter() - STARTED, True, outputs)
        row = table[(table["model"] == model) & (table["size"] == n_users)].iloc[0]
        log(f"  test hit@1 {row['hit@1']:.2f} mrr {row['mrr']:.2f}; smallest significant so far: {answer}")
        pack(archive, outputs)
    log("done")


if __name__ == "__main__":
    main()
