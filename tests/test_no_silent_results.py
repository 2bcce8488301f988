"""Issue 16: no silent wrong results. Each test names the item it covers; each failed on the code
before the fix (a wrong result, a late error, or a lost record) and passes after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from xcross_lib import batch
from xcross_lib.data.paths import ENV_DATA_DIR, find_data_dir
from xcross_lib.errors import DataError, ModelFileError, ParameterError
from xcross_lib.models.source import SOURCE_FILE, locate_sources, source_dir, source_places
from xcross_lib.paths import REPO_ROOT
from xcross_lib.run import resolve_parameters

SHIPPED = REPO_ROOT / "outputs" / "reference" / "sources"


def copy_model(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


# 1. a name resolves in one documented order; the output_dir in use comes before the shipped models

@pytest.mark.unit
def test_a_model_trained_into_output_dir_is_the_one_scored(tmp_path):
    mine = copy_model(SHIPPED / "Tools", tmp_path / "out" / "sources" / "Tools")
    record = json.loads((mine / SOURCE_FILE).read_text())
    (mine / SOURCE_FILE).write_text(json.dumps({**record, "mark": "mine"}))
    [found] = locate_sources(["Tools"], tmp_path / "out")
    assert found == "Tools" and found.folder == mine  # the name labels the row, the folder is the trained one
    assert source_dir(found) == mine
    assert source_places("Tools", tmp_path / "out")[0] == tmp_path / "out" / "sources" / "Tools"
    from xcross_lib.experiments import source_models

    [row] = source_models([found])
    assert row["folder"].endswith("out/sources/Tools") and len(row["adapter_sha256"]) == 10
    assert locate_sources(["Tools"], tmp_path / "elsewhere")[0].folder == SHIPPED / "Tools"  # nothing trained there


@pytest.mark.unit
def test_notebook_02_binds_its_sources_to_output_dir(tmp_path):
    nb = nbformat.read(REPO_ROOT / "notebooks" / "02_zero_shot.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "resolve_source_names(sources, output_dir, data_dir)" in code
    assert 'table["model_folder"]' in code and 'table["adapter_sha256"]' in code
    from xcross_lib.models.source import available_sources, resolve_source_names

    mine = copy_model(SHIPPED / "Tools", tmp_path / "out" / "sources" / "Tools")
    copy_model(SHIPPED / "Sports", tmp_path / "out" / "sources" / "Garden")  # a model of a domain of one's own
    by_name = {str(s): s.folder for s in resolve_source_names("Tools,Sports", tmp_path / "out")}
    assert by_name == {"Tools": mine, "Sports": SHIPPED / "Sports"}
    assert available_sources(tmp_path / "out") == ["Tools", "Toys", "Sports", "Electronics", "Garden"]
    assert {str(s): s.folder for s in resolve_source_names("all", tmp_path / "out")}["Garden"] == \
        tmp_path / "out" / "sources" / "Garden"


# 2. a data directory variable that is set is used or refused

@pytest.mark.unit
def test_a_set_but_missing_data_dir_variable_is_refused(tmp_path, monkeypatch, tiny_data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "no-such-folder"))
    with pytest.raises(DataError, match=r"\$XCROSS_DATA_DIR is .*no-such-folder, which does not exist.*unset XCROSS_DATA_DIR"):
        find_data_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(ENV_DATA_DIR, str(empty))
    with pytest.raises(DataError, match="holds no domain folder"):
        find_data_dir()
    monkeypatch.setenv(ENV_DATA_DIR, str(tiny_data_dir))
    assert find_data_dir() == tiny_data_dir


# 3. shipped models stay findable wherever outputs go

@pytest.mark.unit
def test_shipped_models_are_found_with_outputs_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "outputs"))
    assert source_dir("Sports") == SHIPPED / "Sports"
    with pytest.raises(ParameterError, match=r"no source model 'Nowhere'.*reference/sources/Nowhere.*01_source_lora"):
        source_dir("Nowhere")


# 4. the batch runner owns its runs

SLEEPY = """import time
time.sleep(seconds)
open(marker, "a").write("ran\\n")
"""


def sleepy_grid(tmp_path: Path, seconds: float, n: int = 1) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seconds = 1.0\nmarker = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(SLEEPY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "sleepy.ipynb"
    nbformat.write(nb, path)
    grid = {"name": "sleepy", "runs": [{"notebook": str(path), "grid": {"marker": [str(tmp_path / f"ran{k}") for k in range(n)]},
                                        "fixed": {"seconds": seconds}}]}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    return tmp_path / "grid.yaml"


@pytest.mark.unit
def test_a_claimed_run_is_skipped_by_a_second_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    grid = sleepy_grid(tmp_path, 0.0)
    _, _, [run] = batch.load_grid(grid)
    held = batch.Claim(tmp_path / "out" / "batch" / "sleepy.claims", run.key)
    assert held.acquire()  # another runner holds it
    [record] = batch.run_grid(grid, progress=False)
    assert record["status"] == "skipped" and str(os.getpid()) in record["why"]
    assert not (tmp_path / "ran0").exists() and batch.Ledger(tmp_path / "out" / "batch" / "sleepy.jsonl").records() == []
    held.release()
    again = batch.Claim(tmp_path / "out" / "batch" / "sleepy.claims", run.key)
    assert again.acquire()  # released with its holder
    again.release()


@pytest.mark.smoke
def test_killing_the_runner_ends_its_run_and_frees_the_claim(tmp_path):
    grid = sleepy_grid(tmp_path, 60.0)
    env = {**os.environ, "XCROSS_OUTPUTS_DIR": str(tmp_path / "out"), "PYTHONPATH": str(REPO_ROOT)}
    runner = subprocess.Popen([sys.executable, "-m", "xcross_lib.batch", str(grid)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    claims = tmp_path / "out" / "batch" / "sleepy.claims"
    deadline = time.time() + 60
    while time.time() < deadline and not list(claims.glob("*.lock")):
        time.sleep(0.2)
    [lock] = list(claims.glob("*.lock"))
    time.sleep(3)  # the run's process is up
    child = subprocess.run(["pgrep", "-f", f"xcross_lib.run {tmp_path / 'sleepy.ipynb'}"], capture_output=True, text=True)
    assert child.stdout.split(), "the run's process should be running"
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    _, _, [run] = batch.load_grid(grid)
    claim = batch.Claim(claims, run.key)
    deadline = time.time() + 30
    while time.time() < deadline and not claim.acquire():
        time.sleep(0.5)
    assert claim.fd is not None, "the claim should be free once the runner and its run are gone"
    claim.release()
    for pid in child.stdout.split():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (tmp_path / "ran0").exists()  # the run was ended, not left to finish unseen


# 5. each ledger record starts on a line of its own: tests/test_batch.py::test_ledger_ignores_a_cut_line_and_keeps_the_next_record


# 7. the runner prints the whole error and the executed notebook's path

@pytest.mark.unit
def test_error_message_keeps_every_line_and_drops_progress_bars():
    stderr = ("Executing:  50%|#####     | 1/2\r[IPKernelApp] WARNING | something\n"
              "error: 00_data failed: DataError: no X-Cross data directory found. Looked at:\n"
              "  - /a (the data_dir argument)\nFix: pass data_dir=...\nthe executed notebook with the traceback: /x.ipynb\n")
    message = batch.error_message(stderr)
    assert message.startswith("error: 00_data failed: DataError: no X-Cross data directory found")
    assert "Fix: pass data_dir" in message and message.endswith("/x.ipynb") and "Executing" not in message


@pytest.mark.smoke
def test_run_prints_the_whole_cell_error_and_the_executed_path(tmp_path, capsys):
    from xcross_lib.run import main

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('raise ValueError("first line\\nsecond line: the fix")')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fails.ipynb")
    assert main([str(tmp_path / "fails.ipynb"), "-o", str(tmp_path / "ran.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "ValueError: first line\nsecond line: the fix" in err
    assert f"the executed notebook with the traceback: {tmp_path / 'ran.ipynb'}" in err


# 8. values are checked before the kernel starts

@pytest.mark.unit
@pytest.mark.parametrize("notebook, name, value, says", [
    ("01_source_lora", "epochs", "abc", "epochs = 'abc': must be an integer of at least 1"),
    ("01_source_lora", "n_test_users", -5, "n_test_users = -5: must be an integer of at least 1, or null"),
    ("01_source_lora", "n_train_users", 0, "n_train_users = 0"),
    ("01_source_lora", "backbone", "minilmx", "backbone = 'minilmx': must be one of minilm"),
    ("01_source_lora", "domain", "Tols", "Did you mean 'Tools'"),
    ("03_xcross", "sources", "Sports,Elec", "sources = 'Sports,Elec'"),
    ("03_xcross", "learning_rate", 0, "learning_rate = 0: must be a number > 0"),
    ("03_xcross", "parametrisation", "fanin", "one of 'paper', 'fan_in', 'normalised'"),
    ("11_learning_curve", "model", "XCross", "model = 'XCross'"),
    ("04_baselines", "baselines", ["LoRA", "XLORA"], "baselines"),
    ("07_limited_data", "sizes", [50, 0], "sizes = [50, 0]"),
    ("03_xcross", "user_fraction", 1.5, "user_fraction = 1.5"),
])
def test_bad_values_are_refused_with_the_parameter_named(notebook, name, value, says):
    with pytest.raises(ParameterError, match=None) as err:
        resolve_parameters(notebook, {}, {name: value})
    assert says in str(err.value) and notebook in str(err.value)


@pytest.mark.unit
def test_good_values_and_defaults_pass():
    assert resolve_parameters("11_learning_curve", {}, {"epochs": "auto", "n_train_users": None})["epochs"] == "auto"
    assert resolve_parameters("03_xcross", {}, {"epochs": 3, "learning_rate": 2e-4, "sources": "auto"})["epochs"] == 3


# 9. corrupt files and no network: the file named, what to do, no traceback

@pytest.mark.unit
def test_a_corrupt_adapter_names_its_file(tmp_path):
    from xcross_lib.models.source import load_source

    model = copy_model(SHIPPED / "Tools", tmp_path / "Tools")
    (model / "adapter_model.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(ModelFileError, match=r"adapter_model.safetensors cannot be read as safetensors.*Fix"):
        load_source(model)
    (model / SOURCE_FILE).write_text('{"backbone": "mini')
    with pytest.raises(ModelFileError, match=r"source.json is not valid JSON"):
        load_source(model)


@pytest.mark.unit
def test_a_cut_protocol_file_is_made_again(tiny_data_dir, tmp_path):
    from xcross_lib.data import load_domain, prepare_protocol

    domain = load_domain("Tools", tiny_data_dir)
    first = prepare_protocol(domain, tmp_path / "data", 0, 1.0, progress=False)
    info = first.root / "protocol.json" if hasattr(first, "root") else next((tmp_path / "data").rglob("protocol.json"))
    text = info.read_text()
    info.write_text(text[: len(text) // 2])
    with pytest.warns(UserWarning, match="protocol.json is unreadable"):
        again = prepare_protocol(domain, tmp_path / "data", 0, 1.0, progress=False)
    assert again.info["candidates_sha256"] == first.info["candidates_sha256"]
    assert json.loads(info.read_text())["candidates_sha256"] == first.info["candidates_sha256"]


@pytest.mark.unit
def test_download_without_network_exits_2_with_one_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xcross_lib.data.download", "--domains", "Tools", "--dest", str(tmp_path),
                           "--base-url", "http://127.0.0.1:9/none"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 2
    assert "error: could not download http://127.0.0.1:9/none/Tools/" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.unit
def test_a_run_names_the_commit_it_started_with_not_a_later_checkout(tmp_path, monkeypatch):
    from xcross_lib import provenance

    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "table.csv").write_text("a\n1\n")
    git("add", "code.py", "outputs/table.csv")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(provenance, "_COMMIT_AT_START", {})
    at_start = provenance.git_commit()
    assert len(at_start) == 40 and not at_start.endswith("+dirty")
    (tmp_path / "outputs" / "table.csv").write_text("a\n2\n")  # an earlier run's committed table, rewritten
    assert provenance.checkout_commit() == at_start  # outputs/ is not code
    (tmp_path / "code.py").write_text("x = 2\n")  # the checkout changes while the run goes on
    assert provenance.checkout_commit() == at_start + "+dirty"
    assert provenance.git_commit() == at_start  # the code this process imported
    stamped = provenance.stamp(pd.DataFrame({"a": [1]}), "cmd")
    assert stamped["commit"].iloc[0] == at_start and stamped["device"].iloc[0] == provenance.compute_device()
    kept = provenance.stamp(pd.DataFrame({"a": [1], "device": ["cuda: H200"]}), "cmd")  # a row that says where it ran
    assert kept["device"].iloc[0] == "cuda: H200"


@pytest.mark.unit
def test_a_copy_without_git_names_the_commit_it_was_copied_at_or_unknown(tmp_path, monkeypatch):
    """A lent GPU machine gets the working tree without .git: $XCROSS_COMMIT, else "unknown"."""
    from xcross_lib import provenance

    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)  # no repository here, nor above (tmp)
    monkeypatch.delenv("XCROSS_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.checkout_commit() == "unknown"
    monkeypatch.setenv("XCROSS_COMMIT", "abc1234")
    assert provenance.checkout_commit() == "abc1234"
