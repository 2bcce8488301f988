"""Bad inputs and interruptions, tried as a new user would: each case's command, exit code, message
and whether a result came out wrong without an error. Prints a markdown table (docs/bad_inputs.md).

    .venv/bin/python benchmarks/bad_inputs.py            # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bad_inputs.py --only 3   # cases whose number or name contains "3"

A case passes when the command fails with a message holding the expected words (an error before
work, naming the parameter or file and the fix), or, for the cases that must give the right result,
when it exits 0 with that result. The batch and training interruptions (kill -9 of the runner, of
a training run; two runners at once) are tests in tests/test_no_silent_results.py and
tests/test_scorer.py and are listed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SHIPPED = REPO / "outputs" / "reference" / "sources"


def run_nb(*args: str) -> list[str]:
    return [PY, "-m", "xcross_lib.run", *args]


def cases(tmp: Path) -> list[dict]:
    """(name, command, environment, words the message must hold; or check: a function of the output)."""
    corrupt = tmp / "corrupt" / "Tools"
    shutil.copytree(SHIPPED / "Tools", corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    cut_json = tmp / "cutjson" / "Tools"
    shutil.copytree(SHIPPED / "Tools", cut_json)
    (cut_json / "source.json").write_text((cut_json / "source.json").read_text()[:40])
    bad_data = tmp / "baddata"
    for d in ("Tools", "Sports", "Electronics", "Toys"):
        (bad_data / d).mkdir(parents=True)
        for f in ("train.json", "test.json", "meta_data.json", "smap.json", "umap.json"):
            (bad_data / d / f).write_text("{}")
    (bad_data / "Tools" / "train.json").write_text('{"1": [1, 2, 3')  # cut
    (bad_data / "Toys" / "meta_data.json").unlink()
    grid_typo = tmp / "typo.yaml"
    grid_typo.write_text("name: t\nprofile: cpu\nruns:\n  - notebook: 00_data\n    grid: {domians: [Tools]}\n")
    grid_bad_yaml = tmp / "bad.yaml"
    grid_bad_yaml.write_text("name: t\nruns: [\n")
    grid_bad_value = tmp / "value.yaml"
    grid_bad_value.write_text("name: t\nprofile: cpu\nruns:\n  - notebook: 01_source_lora\n    grid: {epochs: [1, zero]}\n")
    grid_missing_data = tmp / "nodata.yaml"
    grid_missing_data.write_text(f"name: nodata\nruns:\n  - notebook: 00_data\n    fixed: {{data_dir: {tmp / 'nowhere'}}}\n")
    env_out = {"XCROSS_OUTPUTS_DIR": str(tmp / "outputs")}
    return [
        # item 1-3: which model and which data
        dict(name="02 with output_dir scores that folder's model", cmd=[PY, "-c",
             "from xcross_lib.models.source import locate_sources; import sys; "
             f"print(locate_sources(['Tools'], sys.argv[1])[0].folder)", str(tmp / "mine")],
             setup=lambda: shutil.copytree(SHIPPED / "Tools", tmp / "mine" / "sources" / "Tools"),
             ok_output=str(tmp / "mine" / "sources" / "Tools"), lost="nothing: the right model, no error"),
        dict(name="XCROSS_DATA_DIR set to a missing folder", cmd=run_nb("00_data", "--profile", "cpu"),
             env={"XCROSS_DATA_DIR": str(tmp / "misspelt")}, words=["$XCROSS_DATA_DIR is", "does not exist", "unset XCROSS_DATA_DIR"]),
        dict(name="XCROSS_DATA_DIR set to an empty folder", cmd=run_nb("00_data", "--profile", "cpu"),
             env={"XCROSS_DATA_DIR": str(tmp)}, words=["holds no domain folder"]),
        dict(name="XCROSS_OUTPUTS_DIR elsewhere: shipped models still found", cmd=[PY, "-c",
             "from xcross_lib.models.source import source_dir; print(source_dir('Sports'))"], env=env_out,
             ok_output=str(SHIPPED / "Sports"), lost="nothing: the shipped model, no error"),
        # item 8: values before the kernel
        dict(name="-p epochs abc", cmd=run_nb("01_source_lora", "--profile", "cpu", "-p", "epochs", "abc"),
             words=["epochs = 'abc'", "integer of at least 1"]),
        dict(name="-p n_test_users -5", cmd=run_nb("01_source_lora", "--profile", "cpu", "-p", "n_test_users", "-5"),
             words=["n_test_users = -5"]),
        dict(name="-p n_train_users 0", cmd=run_nb("01_source_lora", "--profile", "cpu", "-p", "n_train_users", "0"),
             words=["n_train_users = 0"]),
        dict(name="unknown backbone", cmd=run_nb("01_source_lora", "-p", "backbone", "bert-large"),
             words=["backbone = 'bert-large'", "local model directory"]),
        dict(name="unknown domain", cmd=run_nb("01_source_lora", "-p", "domain", "Tols"), words=["Did you mean 'Tools'"]),
        dict(name="unknown target in 03", cmd=run_nb("03_xcross", "-p", "target", "Garden"), words=["target = 'Garden'"]),
        dict(name="misspelt source list", cmd=run_nb("03_xcross", "-p", "sources", "Sports,Electronic"),
             words=["sources = 'Sports,Electronic'", "Did you mean 'Electronics'"]),
        dict(name="-p learning_rate abc", cmd=run_nb("03_xcross", "-p", "learning_rate", "abc"), words=["learning_rate = 'abc'"]),
        dict(name="-p learning_rate 0", cmd=run_nb("03_xcross", "-p", "learning_rate", "0"), words=["number > 0"]),
        dict(name="-p user_fraction 2", cmd=run_nb("00_data", "-p", "user_fraction", "2"), words=["user_fraction = 2"]),
        dict(name="-p select_metric ndcg", cmd=run_nb("03_xcross", "-p", "select_metric", "ndcg"), words=["select_metric = 'ndcg'"]),
        dict(name="-p parametrisation fanin", cmd=run_nb("03_xcross", "-p", "parametrisation", "fanin"), words=["'fan_in'"]),
        dict(name="-p model XCross (11)", cmd=run_nb("11_learning_curve", "-p", "model", "XCross"), words=["model = 'XCross'"]),
        dict(name="-p top_k_layers 0", cmd=run_nb("03_xcross", "-p", "top_k_layers", "0"), words=["top_k_layers = 0"]),
        dict(name="-p sizes [50, 0] (07)", cmd=run_nb("07_limited_data", "-p", "sizes", "[50, 0]"), words=["sizes = [50, 0]"]),
        dict(name="-p baselines [XLORA]", cmd=run_nb("04_baselines", "-p", "baselines", "[XLORA]"), words=["baselines = ['XLORA']"]),
        dict(name="-p train_head maybe", cmd=run_nb("03_xcross", "-p", "train_head", "maybe"), words=["train_head = 'maybe'"]),
        dict(name="misspelt parameter name", cmd=run_nb("03_xcross", "-p", "learning_rte", "1e-3"), words=["Did you mean 'learning_rate'"]),
        dict(name="unknown notebook", cmd=run_nb("03_xcros"), words=["Did you mean '03_xcross'"]),
        dict(name="unknown profile", cmd=run_nb("00_data", "--profile", "gpu"), words=["no parameter profile 'gpu'"]),
        # data and model files
        dict(name="data_dir that does not exist", cmd=run_nb("00_data", "-p", "data_dir", str(tmp / "nowhere")),
             words=["the data_dir argument is", "does not exist"]),
        dict(name="a cut train.json", cmd=run_nb("00_data", "-p", "data_dir", str(bad_data), "-p", "domains", "Tools"),
             words=["train.json", "truncated"]),
        dict(name="a domain without meta_data.json", cmd=run_nb("00_data", "-p", "data_dir", str(bad_data), "-p", "domains", "Toys"),
             words=["lacks meta_data.json"]),
        dict(name="a corrupt adapter_model.safetensors", cmd=[PY, "-c",
             "from xcross_lib.models.source import load_source; import sys; load_source(sys.argv[1])", str(corrupt)],
             words=["adapter_model.safetensors cannot be read as safetensors", "Fix:"]),
        dict(name="a cut source.json", cmd=[PY, "-c",
             "from xcross_lib.models.source import load_source; import sys; load_source(sys.argv[1])", str(cut_json)],
             words=["source.json is not valid JSON"]),
        dict(name="download without network", cmd=[PY, "-m", "xcross_lib.data.download", "--domains", "Tools", "--dest",
             str(tmp / "dl"), "--base-url", "http://127.0.0.1:9/none"], words=["error: could not download", "Fix:"], no_traceback=True),
        dict(name="sources=auto before 02 ran", cmd=run_nb("03_xcross", "-p", "sources", "auto", "-p", "n_train_users", "8"),
             env=env_out, words=["sources='auto' needs", "run notebooks/02_zero_shot.ipynb first"]),
        # the batch runner
        dict(name="grid with a misspelt name", cmd=[PY, "-m", "xcross_lib.batch", str(grid_typo)], words=["Did you mean 'domains'"]),
        dict(name="grid that is not YAML", cmd=[PY, "-m", "xcross_lib.batch", str(grid_bad_yaml)], words=["is not valid YAML"]),
        dict(name="grid with a bad value", cmd=[PY, "-m", "xcross_lib.batch", str(grid_bad_value)], words=["epochs = 'zero'"]),
        dict(name="grid run failing: whole message and notebook path", cmd=[PY, "-m", "xcross_lib.batch", str(grid_missing_data)],
             env=env_out, words=["the data_dir argument is", "does not exist", "Fix:", "the executed notebook"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for k, case in enumerate(cases(tmp), 1):
            if args.only and args.only not in f"{k} {case['name']}":
                continue
            if "setup" in case:
                case["setup"]()
            env = {**os.environ, "PYTHONPATH": str(REPO), **case.get("env", {})}
            started = time.perf_counter()
            proc = subprocess.run(case["cmd"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
            wall = time.perf_counter() - started
            text = proc.stdout + proc.stderr
            if "ok_output" in case:
                good = proc.returncode == 0 and case["ok_output"] in proc.stdout
                message = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
            else:
                good = proc.returncode != 0 and all(w in text for w in case["words"])
                good = good and not (case.get("no_traceback") and "Traceback" in proc.stderr)
                lines = [l.strip() for l in text.replace("\r", "\n").splitlines()]
                errors = [l for l in lines if l.startswith("error")]  # the runner's and the commands' own lines
                raised = [l for l in lines if l.split(":")[0].endswith(("Error", "Exception"))]  # a library call's last line
                message = " / ".join(errors or raised[-1:] or lines[-1:])[:400]
            shared = str(REPO.parent / "shared")
            shown = " ".join(case["cmd"]).replace(str(tmp), "$TMP").replace(PY, "python").replace(str(REPO) + "/", "")
            envs = " ".join(f"{k}={v}".replace(str(tmp), "$TMP") for k, v in case.get("env", {}).items())
            rows.append({"n": k, "case": case["name"], "command": (envs + " " if envs else "") + shown, "exit": proc.returncode,
                         "message": message.replace(str(tmp), "$TMP").replace(str(REPO) + "/", "").replace(shared, "../shared")
                         .replace("|", "/"),
                         "as expected": "yes" if good else "NO", "wall_s": round(wall, 1),
                         "lost": case.get("lost", "nothing: refused before training or writing a result")})
            print(f"{k:2d} {'ok ' if good else 'BAD'} rc={proc.returncode} {wall:5.1f}s {case['name']}", file=sys.stderr, flush=True)
    print("| # | case | command | exit | message | work lost | as expected | s |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['case']} | `{r['command']}` | {r['exit']} | {r['message']} | {r['lost']} | {r['as expected']} "
              f"| {r['wall_s']} |")
    bad = [r for r in rows if r["as expected"] != "yes"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} as expected", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
