"""The batch runner: parameters checked up front, a failed run isolated, finished runs skipped."""

import json

import pytest
import yaml

from xcross_lib import batch
from xcross_lib.errors import ParameterError
from xcross_lib.paths import REPO_ROOT, shown_path


def write_grid(path, data_dir, domains, **extra):
    spec = {"name": "tiny", "profile": "smoke",
            "runs": [{"notebook": "00_data", "grid": {"domains": domains}, "fixed": {"data_dir": str(data_dir), **extra}}]}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.unit
def test_grid_expands_and_checks_names(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", tmp_path, ["Tools", "Toys"], seed=1)
    name, profile, runs = batch.load_grid(grid)
    assert (name, profile) == ("tiny", "smoke")
    assert [r.parameters["domains"] for r in runs] == ["Tools", "Toys"] and all(r.parameters["seed"] == 1 for r in runs)
    assert len({r.key for r in runs}) == 2
    with pytest.raises(ParameterError, match="Did you mean 'seed'"):
        batch.load_grid(write_grid(tmp_path / "bad.yaml", tmp_path, ["Tools"], sed=1))


@pytest.mark.unit
@pytest.mark.parametrize("grid", sorted(p.name for p in (REPO_ROOT / "params" / "grids").glob("*.yaml")))
def test_every_committed_grid_loads_with_its_parameters_checked(grid):
    name, _, runs = batch.load_grid(REPO_ROOT / "params" / "grids" / grid)
    assert name == grid.removesuffix(".yaml") and runs and len({r.key for r in runs}) == len(runs)


@pytest.mark.unit
def test_the_tables_grid_runs_x_cross_before_its_baselines_over_the_papers_and_the_validation_chosen_pairs():
    import pandas as pd

    from xcross_lib.report import PAPER_SOURCES

    _, profile, runs = batch.load_grid(REPO_ROOT / "params" / "grids" / "tables.yaml")
    paper = {t: s.replace("+", ",") for t, s in PAPER_SOURCES.items()}  # DESIGN.md, the paper's Table 1
    # the validation-chosen pair from the committed zero-shot matrix: best two other domains by Hit@1, then MRR
    matrix = pd.read_csv(REPO_ROOT / "outputs" / "reference" / "zero_shot_matrix.csv")
    val = matrix[(matrix["split"] == "validation") & (matrix["source"] != matrix["target"])
                 & matrix["source"].isin(list(paper))]
    chosen = {t: ",".join(g.sort_values(["hit@1", "mrr"], ascending=False)["source"][:2]) for t, g in val.groupby("target")}
    assert set(chosen) == set(paper)
    order = [(r.notebook, r.parameters["target"], r.parameters["sources"]) for r in runs]
    assert profile == "cpu" and all(r.parameters["write_reference"] for r in runs)
    assert {(t, s) for n, t, s in order if n == "04_baselines"} == (
        {(t, s) for t, s in paper.items()} | {(t, s) for t, s in chosen.items() if s != paper[t]})
    first_other = min(i for i, (n, t, s) in enumerate(order) if s != paper[t])
    assert all(s == paper[t] for n, t, s in order[:first_other])  # the paper's pairs first
    for n, t, s in order:
        assert s in (paper[t], chosen[t])
        if n == "04_baselines":  # it reads the newest finished X-Cross run of its target and sources
            assert order.index(("03_xcross", t, s)) < order.index((n, t, s))


@pytest.mark.unit
def test_ledger_ignores_a_cut_line_and_keeps_the_next_record(tmp_path):
    ledger = batch.Ledger(tmp_path / "l.jsonl")
    ledger.append({"key": "a", "status": "ok"})
    with open(ledger.path, "a") as f:
        f.write('{"key": "b", "sta')  # a crash mid-write
    assert ledger.done() == {"a"}
    ledger.append({"key": "c", "status": "ok"})  # issue 16, item 5: it starts on a line of its own
    assert ledger.done() == {"a", "c"}
    assert ledger.path.read_text().splitlines()[-1] == json.dumps({"key": "c", "status": "ok"})


@pytest.mark.smoke
def test_failed_run_is_isolated_and_finished_runs_are_skipped(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    spec = {"name": "tiny", "profile": "smoke",
            "runs": [{"notebook": "00_data", "grid": {"data_dir": [str(tiny_data_dir), str(tmp_path / "nowhere")]},
                      "fixed": {"domains": "Tools"}}]}
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(spec))
    first = {r["parameters"]["data_dir"]: r for r in batch.run_grid(grid, jobs=2, progress=False)}
    ok, failed = first[str(tiny_data_dir)], first[str(tmp_path / "nowhere")]
    assert ok["status"] == "ok" and failed["status"] == "failed"
    # the whole message, not its last line: what was wrong, where, and the fix
    assert "the data_dir argument is" in failed["error"] and "does not exist" in failed["error"] and "Fix:" in failed["error"]
    # recorded as results show paths (relative to the repository where it is beside it: no machine layout)
    assert failed["executed_notebook"] == shown_path(failed["executed_notebook"])
    failed_nb = json.loads((REPO_ROOT / failed["executed_notebook"]).read_text())  # an absolute path stays one
    assert any(o.get("output_type") == "error" for c in failed_nb["cells"] for o in c.get("outputs", []))
    second = batch.run_grid(grid, jobs=2, progress=False)
    assert [r["parameters"]["data_dir"] for r in second] == [str(tmp_path / "nowhere")]  # the finished run is skipped
    ledger = batch.Ledger(tmp_path / "out" / "batch" / "tiny.jsonl")
    assert [r["status"] for r in ledger.records()].count("ok") == 1 and len(ledger.records()) == 3


@pytest.mark.unit
def test_recorded_commands_read_as_typed_and_parse_back():
    from xcross_lib.run import _parse_value

    for value, text in ((True, "true"), (100, "100"), ([50, 75], "[50, 75]"), (None, "null"), (3e-4, "0.0003"),
                        ("X-Cross (head frozen)", "X-Cross (head frozen)")):
        assert batch._cli_value(value) == text and _parse_value(text) == value


@pytest.mark.unit
def test_a_run_shipped_by_an_earlier_checkout_is_skipped_and_new_shipped_runs_are_recorded(tmp_path, monkeypatch):
    """A fresh clone has no outputs/batch/ ledger, only the committed outputs/reference/batch/ one:
    what it lists as finished is not run again, and a run that writes reference tables is added to it."""
    spec = {"name": "tables", "profile": "smoke",
            "runs": [{"notebook": "03_xcross", "grid": {"target": ["Tools", "Toys", "Sports"]},
                      "fixed": {"write_reference": True}},
                     {"notebook": "03_xcross", "grid": {"target": ["Electronics"]}}]}
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(spec))
    runs = batch.load_grid(grid)[2]
    out = tmp_path / "out"
    local, shipped = batch.grid_ledgers(out, "tables")
    shipped.append({"key": runs[0].key, "status": "ok"})       # Tools: shipped by an earlier session
    shipped.append({"key": runs[1].key, "status": "failed"})   # Toys: failed there, so it runs again
    executed = []

    def fake_execute(run, profile, notebooks_dir, claim=None):
        executed.append(run.parameters["target"])
        return {"key": run.key, "parameters": run.parameters, "status": "ok"}

    monkeypatch.setattr(batch, "execute", fake_execute)
    batch.run_grid(grid, output_dir=out, progress=False)
    assert executed == ["Toys", "Sports", "Electronics"]
    assert [r["key"] for r in local.records()] == [r.key for r in runs[1:]]
    # only the runs that wrote reference tables go to the shipped ledger (Electronics did not)
    assert [(r["key"], r["status"]) for r in shipped.records()] == [
        (runs[0].key, "ok"), (runs[1].key, "failed"), (runs[1].key, "ok"), (runs[2].key, "ok")]
    assert batch.done_keys(out, "tables") == {r.key for r in runs}
    executed.clear()
    batch.run_grid(grid, output_dir=out, progress=False)
    assert executed == []
