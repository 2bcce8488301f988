"""The papermill runner: parameter checks (unit) and the data notebook on made data (smoke)."""

import json
import shutil

import nbformat
import pandas as pd
import pytest

from xcross_lib import run
from xcross_lib.errors import ParameterError
from xcross_lib.paths import NOTEBOOKS_DIR, PARAMS_DIR
from xcross_lib.studies import shipped_per_user


@pytest.mark.unit
def test_a_typo_in_a_parameter_name_is_an_error():
    with pytest.raises(ParameterError, match="00_data.ipynb has no parameter 'domian'. Did you mean 'domains'"):
        run.resolve_parameters("00_data", {}, {"domian": "Tools"})


@pytest.mark.unit
def test_a_typo_in_a_profile_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nuser_fractoin: 0.4\n")
    with pytest.raises(ParameterError, match="no notebook has a parameter 'user_fractoin'. Did you mean 'user_fraction'"):
        run.load_profile(str(bad))
    with pytest.raises(ParameterError, match="no parameter profile 'cpuu'"):
        run.load_profile("cpuu")


@pytest.mark.unit
def test_profiles_load_and_profile_values_yield_to_explicit_ones():
    for path in PARAMS_DIR.glob("*.yaml"):
        profile = run.load_profile(path.stem)
        assert isinstance(profile, dict)
        for notebook in NOTEBOOKS_DIR.glob("*.ipynb"):  # every profile passes every notebook's value checks
            run.resolve_parameters(notebook.stem, profile, {})
    params = run.resolve_parameters("00_data", {"seed": 0, "n_candidates": 30}, {"seed": 5})
    assert params == {"seed": 5, "n_candidates": 30}


@pytest.mark.unit
def test_unknown_notebook_and_cli_errors(capsys):
    with pytest.raises(ParameterError, match="Did you mean '00_data'"):
        run.notebook_path("00_dta")
    assert run.main(["00_data", "-p", "domian", "Tools"]) == 2
    assert "Did you mean 'domains'" in capsys.readouterr().err


@pytest.mark.unit
def test_every_pipeline_step_has_valid_parameters_and_a_pipeline_typo_is_an_error(capsys, monkeypatch):
    profile = run.load_profile("cpu")
    for name, steps in run.PIPELINES.items():
        for notebook, params in steps:
            resolved = run.resolve_parameters(notebook, profile, params)  # raises on a name the notebook lacks
            assert all(resolved[k] == v for k, v in params.items())
    monkeypatch.delenv("XCROSS_OUTPUTS_DIR", raising=False)
    assert run.main(["--pipeline", "quick", "-p", "n_test_user", "5"]) == 2  # before anything runs
    assert "no notebook of the pipeline has a parameter 'n_test_user'. Did you mean 'n_test_users'" in capsys.readouterr().err


@pytest.mark.unit
def test_report_reads_the_shipped_results_beside_another_outputs_folder(tmp_path):
    from xcross_lib import report
    from xcross_lib.paths import REPO_ROOT, shown_path

    (tmp_path / "reference").mkdir()
    pd.DataFrame({"model": ["X-Cross", "Pooler + Scorer", "Sports (zero-shot)", "random"], "target": "Tools",
                  "hit@1": [9.0, 8.0, 7.0, 3.0], "mrr": [20.0, 19.0, 18.0, 10.0], "n_users": 300}).to_csv(
        tmp_path / "reference" / "table2_tools.csv", index=False)
    table = report.our_table2(tmp_path)
    mine = table[table["results"] == shown_path(tmp_path)].set_index("model")  # relative where beside the repo
    assert sorted(mine.index) == ["Pooler + Scorer", "Sports-LoRA", "X-Cross", "random"]
    assert mine.loc["random", "group"] == "Reference rows" and mine.loc["Sports-LoRA", "group"].startswith("LoRA Fine-Tuning")
    if (REPO_ROOT / "outputs" / "reference" / "zero_shot_matrix.csv").is_file():  # the shipped results, labelled
        assert (table["results"] == "outputs").any() and "Tools-LoRA" in set(table["model"])
    assert report._roots(REPO_ROOT / "outputs") == [REPO_ROOT / "outputs"]
    # printed paths: relative inside or beside the repository, so a committed report names no machine's folders
    assert report.shown_path(REPO_ROOT.parent / "shared" / "reference") == "../shared/reference"
    assert report.shown_path(REPO_ROOT / "outputs" / "quick") == "outputs/quick"


@pytest.mark.unit
def test_report_table2_shows_notebook_04s_row_where_the_zero_shot_matrix_has_the_same_model_and_users(tmp_path):
    from xcross_lib import report
    from xcross_lib.paths import shown_path

    (tmp_path / "reference").mkdir()
    pd.DataFrame({"source": ["Sports", "Electronics", "random"], "target": "Toys", "split": "test",
                  "hit@1": [7.0, 8.36, 3.3], "mrr": [18.0, 19.63, 13.4], "n_users": 4269}).to_csv(
        tmp_path / "reference" / "zero_shot_matrix.csv", index=False)  # e.g. scored in another precision
    pd.DataFrame({"model": ["X-Cross", "Electronics (zero-shot)", "random"], "target": "Toys", "hit@1": [9.9, 8.34, 3.3],
                  "mrr": [21.6, 19.64, 13.4], "n_users": 4269, "sources": "Sports+Electronics"}).to_csv(
        tmp_path / "reference" / "table2_toys.csv", index=False)
    table = report.our_table2(tmp_path)
    mine = table[table["results"] == shown_path(tmp_path)]
    electronics = mine[mine["model"] == "Electronics-LoRA"]
    assert len(electronics) == 1 and electronics["hit@1"].item() == 8.34  # 04's row: the block's own run and users
    assert mine.loc[mine["model"] == "Sports-LoRA", "hit@1"].item() == 7.0  # only in the matrix: kept
    assert mine["model"].tolist().index("Sports-LoRA") < mine["model"].tolist().index("X-Cross")  # order kept


@pytest.mark.unit
def test_the_report_line_under_a_table_names_where_its_rows_were_computed():
    from xcross_lib import report

    table = pd.DataFrame({"target": "Toys", "n_users": [4269, 4269], "commit": ["abcdef0123", "abcdef0123"],
                          "device": ["cpu", "cuda: NVIDIA H200"], "backbone": "minilm", "produced_at": "2026-12-01T13:00:00Z",
                          "command": "python -m xcross_lib.run 04_baselines"})
    line = report.provenance_line(table)
    assert "computed on cpu, cuda: NVIDIA H200" in line and "commit abcdef0" in line and "Toys 4,269" in line
    assert "computed on" not in report.provenance_line(table.drop(columns="device"))  # older tables: nothing claimed


@pytest.mark.unit
def test_table2_keeps_each_source_pair_and_the_report_names_the_pair_that_is_not_the_papers(tmp_path):
    from xcross_lib import provenance, report
    from xcross_lib.paths import shown_path

    path = tmp_path / "reference" / "table2_toys.csv"

    def rows(sources, hit):
        return pd.DataFrame({"model": ["X-Cross", "LoRA", "Sports (zero-shot)", "random"], "target": "Toys",
                             "hit@1": hit, "mrr": [20.0, 19.0, 18.0, 10.0], "n_users": 300, "sources": sources})

    provenance.replace_rows_csv(rows("Sports+Electronics", [9.0, 8.0, 7.0, 3.0]), path, key="sources")
    provenance.replace_rows_csv(rows("Electronics+Tools", [9.5, 8.0, 7.0, 3.0]), path, key="sources")
    provenance.replace_rows_csv(rows("Sports+Electronics", [9.9, 8.0, 7.0, 3.0]), path, key="sources")  # a rerun
    written = pd.read_csv(path)
    assert written["sources"].tolist() == ["Electronics+Tools"] * 4 + ["Sports+Electronics"] * 4
    assert written.loc[written["model"] == "X-Cross", "hit@1"].tolist() == [9.5, 9.9]
    with pytest.raises(ValueError, match="no column 'sources'"):
        provenance.replace_rows_csv(rows("x", [1.0] * 4).drop(columns="sources"), path, key="sources")
    table = report.our_table2(tmp_path)
    mine = table[table["results"] == shown_path(tmp_path)].set_index("model")
    # the paper's pair keeps the paper's names (beside its figures); the other pair's models say their sources;
    # zero-shot and reference rows are the same whatever the pair, shown once
    assert mine.loc["X-Cross", "hit@1"] == 9.9 and mine.loc["X-Cross (Electronics+Tools)", "hit@1"] == 9.5
    assert "target LoRA (Electronics+Tools)" in mine.index and list(mine.index).count("random") == 1


@pytest.mark.unit
def test_cli_values_parse_as_yaml():
    assert run._parse_value("0.4") == 0.4 and run._parse_value("Tools") == "Tools"
    assert run._parse_value("[Tools, Toys]") == ["Tools", "Toys"] and run._parse_value("null") is None
    assert run._parse_value("2e-4") == 2e-4 and run._parse_value("1") == 1 and run._parse_value("true") is True


@pytest.mark.smoke
def test_data_notebook_runs_on_made_data(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    executed = run.run_notebook(
        "00_data",
        {"domains": "Tools,Sports", "data_dir": str(tiny_data_dir), "write_reference": True},
        profile="smoke",
        output=tmp_path / "nb.ipynb",
        progress=False,
    )
    nb = nbformat.read(executed, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))  # the plots
    table = pd.read_csv(tmp_path / "out" / "reference" / "data_summary.csv")
    assert table["domain"].tolist() == ["Tools", "Sports"]
    assert (table["users"] == 40).all() and (table["train"] == 24).all() and (table["test"] == 8).all()
    assert table["command"].iloc[0].startswith("xcross_lib.run_notebook('00_data.ipynb'")
    proto = tmp_path / "out" / "data" / "Tools" / "seed0-users1"
    info = json.loads((proto / "protocol.json").read_text())
    assert info["n_candidates"] == 10 and info["users"] == {"train": 24, "validation": 8, "test": 8}
    cands = pd.read_parquet(proto / "candidates.parquet")
    assert len(cands) == 40 and cands["candidates"].map(len).eq(10).all()


@pytest.mark.smoke
def test_a_failing_notebook_keeps_its_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    code = run.main(["00_data", "-p", "data_dir", str(tmp_path / "missing"), "-p", "domains", "Tools"])
    assert code == 1
    assert "00_data failed" in capsys.readouterr().err
    executed = next((tmp_path / "out" / "notebooks").glob("00_data-*.ipynb"))
    text = executed.read_text()
    assert "no X-Cross data directory found" in text


@pytest.mark.unit
def test_every_notebook_has_a_parameters_cell():
    for path in NOTEBOOKS_DIR.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1, path.name


@pytest.mark.smoke
def test_source_and_zero_shot_notebooks_on_made_data(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    for domain, prefixes, encoding in (("Tools", None, "pair"), ("Sports", 4, "pair")):
        run.run_notebook("01_source_lora", {**common, "domain": domain, "backbone": "tiny-bert", "n_train_users": 12,
                                            "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                            "prefix_min_history": prefixes, "encoding": encoding},
                         profile="smoke", output=tmp_path / f"01-{domain}.ipynb", progress=False)
        source = tmp_path / "out" / "sources" / domain
        record = json.loads((source / "source.json").read_text())
        assert record["n_train_users"] == 12 and record["backbone"] == "tiny-bert" and len(record["curve"]) >= 1
        assert record["scorer"]["encoding"] == encoding
        assert (record["n_train_examples"] > 12) == (prefixes is not None)
        results = pd.read_csv(source / "test_results.csv")
        assert results["model"].tolist() == [f"{domain} LoRA", "random", "popularity", "text similarity"]
    run.run_notebook("02_zero_shot", {**common, "sources": "Tools,Sports", "targets": "Tools,Sports",
                                      "n_test_users": 8, "n_val_users": 8, "write_reference": True},
                     profile="smoke", output=tmp_path / "02.ipynb", progress=False)
    matrix = pd.read_csv(tmp_path / "out" / "reference" / "zero_shot_matrix.csv")
    assert len(matrix) == 8 + 2 * 3 and set(matrix["split"]) == {"test", "validation"} and (matrix["n_users"] == 8).all()
    in_domain = matrix[(matrix["source"] == matrix["target"]) & (matrix["split"] == "test")]
    assert in_domain["p vs text similarity (hit@1)"].between(0, 1).all() or in_domain["p vs text similarity (hit@1)"].isna().all()
    assert set(matrix.loc[matrix["split"] == "test", "source"]) == {"Tools", "Sports", "random", "popularity", "text similarity"}
    top = json.loads((tmp_path / "out" / "zero_shot" / "top_sources.json").read_text())
    assert top == {"Sports": ["Tools"], "Tools": ["Sports"]}  # only the other domain can be chosen
    cached = list((tmp_path / "out" / "zero_shot" / "cache").iterdir())  # named with their precision: a bf16 cache
    assert len(cached) == 2 * 3 + 2 * 2 * 2 and all(p.name.endswith("_fp32.parquet") for p in cached)  # is not read here
    assert (matrix["device"] == "cpu").all()  # and the table says where it was computed
    run.run_notebook("03_xcross", {**common, "target": "Toys", "sources": "Tools,Sports", "n_train_users": 8,
                                   "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                   "top_k_layers": 2},
                     profile="smoke", output=tmp_path / "03.ipynb", progress=False)
    (xdir,) = (tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-full-K2-*")  # the run's digest last
    table = pd.read_csv(xdir / "test_results.csv")
    assert table["model"].tolist()[:4] == ["X-Cross", "X-Cross untrained (average)", "Tools (zero-shot)", "Sports (zero-shot)"]
    factors = pd.read_parquet(xdir / "factors.parquet")
    assert set(factors["point"]) == {"encoder_layer_1", "encoder_layer_2"} and len(factors) == 8 * 2 * 2
    info = json.loads((xdir / "xcross.json").read_text())
    assert info["sources"] == ["Tools", "Sports"] and info["parameters"]["integrators"] == 2 * (2 * 32 * 4)
    assert info["validation"][0]["step"] == 0 and info["run_digest"] in xdir.name
    assert table.loc[0, "params_per_layer"] == 2 * 32 * 4 and table["model_files"].notna().all()
    assert "sources/Tools @" in table.loc[2, "model_files"]  # a source: its folder and adapter digest

    executed = run.run_notebook("08_integrator_weights", {}, output=tmp_path / "08.ipynb", progress=False)
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the static report's plots
    assert "static report" in json.dumps(outputs)  # no widgets under the runner (they can hang papermill)
    from xcross_lib.explorer import factor_explorer  # the explorer itself, in this process

    box = factor_explorer(pd.read_parquet(xdir / "factors.parquet"), ["Tools", "Sports"])
    example, point, pair = box.children[0].children
    example.value = example.options[-1]  # re-renders without error
    assert len(point.options) == 2 and len(pair.options) == 2

    small = {**common, "target": "Toys", "sources": "Tools,Sports", "n_train_users": 6, "n_val_users": 6,
             "n_test_users": 8, "train_candidates": 4, "bf16": False}
    run.run_notebook("05_ablation", {**small, "top_k_layers": 1, "write_reference": True}, profile="smoke",
                     output=tmp_path / "05.ipynb", progress=False)
    (ablation_csv,) = (tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-ablation.csv")
    ablation = pd.read_csv(ablation_csv)
    assert ablation["model"].tolist() == ["X-Cross", "X-Cross -layers", "X-Cross -interactions", "X-Cross -experts",
                                          "X-Cross untrained (average)", "Tools (zero-shot)", "Sports (zero-shot)",
                                          "random", "popularity", "text similarity"]
    assert ablation["params_trained"].iloc[0] > ablation["params_trained"].iloc[1]  # -layers drops W
    assert ablation["params_per_layer"].iloc[0] == 2 * 32 * 4 and ablation["params_per_layer"].iloc[1] == 0
    assert pd.read_csv(tmp_path / "out" / "reference" / "xcross_toys.csv")["commit"].notna().all()
    assert ablation["p (X-Cross vs this, hit@1)"].iloc[1:].between(0, 1).all()
    # a clone without the four runs' weights: 05 reads what it shipped (outputs/reference/xcross_runs/) and trains none
    ablation_runs = list((tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-K1-*"))
    assert len(ablation_runs) == 4 and {f.name for f in ablation_runs} == set(ablation["run_folder"].dropna())
    for folder in ablation_runs:
        shutil.rmtree(folder)
    run.run_notebook("05_ablation", {**small, "top_k_layers": 1, "write_reference": True}, profile="smoke",
                     output=tmp_path / "05-b.ipynb", progress=False)
    assert not list((tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-K1-*"))
    compared = ["model", "hit@1", "mrr", "params_per_layer", "params_trained", "run_folder", "kept_step", "train_wall_s"]
    assert pd.read_csv(ablation_csv)[compared].equals(ablation[compared])  # the untrained row too: shipped with the full run
    with pytest.raises(Exception, match="no finished X-Cross run"):  # a reference Table 2 without its X-Cross row
        run.run_notebook("04_baselines", {**small, "write_reference": True}, profile="smoke",
                         output=tmp_path / "04-early.ipynb", progress=False)
    run.run_notebook("03_xcross", {**small, "write_reference": True}, profile="smoke", output=tmp_path / "03-all.ipynb",
                     progress=False)  # X-Cross, K all
    with pytest.raises(Exception, match=r"Left out, trained otherwise: Toys-Tools\+Sports-.*train\.learning_rate"):
        run.run_notebook("04_baselines", {**small, "learning_rate": 0.0123, "write_reference": True}, profile="smoke",
                         output=tmp_path / "04-other.ipynb", progress=False)  # an X-Cross of another budget: not its row
    run.run_notebook("04_baselines", {**small, "write_reference": True}, profile="smoke", output=tmp_path / "04.ipynb",
                     progress=False)
    baselines = pd.read_csv(tmp_path / "out" / "reference" / "table2_toys.csv").set_index("model")
    assert list(baselines.index[:5]) == ["X-Cross", "LoRA", "Pooler + Scorer", "XLoRA", "MeteoRA"]  # X-Cross: same users
    (xcross_all,) = (tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-full-Kall-*")
    xcross_info = json.loads((xcross_all / "xcross.json").read_text())
    assert baselines.loc["X-Cross", "params_trained"] == xcross_info["parameters"]["trainable"]
    assert baselines.loc["X-Cross", "run_folder"] == xcross_all.name
    p_values = baselines["p (X-Cross vs this, hit@1)"].iloc[1:].dropna()  # NaN where a row equals X-Cross on every user
    assert len(p_values) and p_values.between(0, 1).all() and (baselines["backbone"] == "tiny-bert").all()
    trainable = baselines["params_trained"]
    head = trainable["Pooler + Scorer"]
    assert baselines.loc["Pooler + Scorer", "params_without_head"] == 0
    assert trainable["XLoRA"] == trainable["MeteoRA"] == head + 3 * 2 * (32 + 1)  # L * n * (d + 1) gate weights
    assert trainable["LoRA"] == head + 3 * 2 * (16 * 32 + 32 * 16)  # rank-16 query/value adapters of 3 layers
    # a clone without the runs' weights: 04 reads the shipped copies (outputs/reference/xcross_runs/) of X-Cross
    # and of each baseline, and trains none of them again
    baseline_folders = list((tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-baseline-*"))
    assert len(baseline_folders) == 4
    for folder in [xcross_all, *baseline_folders]:
        shutil.rmtree(folder)
    shipped = {p.name for p in (tmp_path / "out" / "reference" / "xcross_runs").iterdir()}
    assert set(baselines.loc[["LoRA", "Pooler + Scorer", "XLoRA", "MeteoRA"], "run_folder"]) <= shipped
    for kind in ("LoRA", "XLoRA"):  # each record names where and in which precision it ran
        record = json.loads((tmp_path / "out" / "reference" / "xcross_runs" / baselines.loc[kind, "run_folder"]
                             / "run.json").read_text())
        assert record["device"] == "cpu" and record["bf16"] is False
    assert baselines.loc["LoRA", "run_folder"].startswith(next(f.name for f in baseline_folders if f.name.endswith("-LoRA")))
    run.run_notebook("04_baselines", {**small, "write_reference": True}, profile="smoke", output=tmp_path / "04-b.ipynb",
                     progress=False)
    again = pd.read_csv(tmp_path / "out" / "reference" / "table2_toys.csv").set_index("model")
    assert again.loc["X-Cross", "run_folder"] == xcross_all.name
    assert not list((tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-baseline-*"))  # nothing trained
    compared = ["hit@1", "mrr", "params_per_layer", "params_with_head", "params_trained", "train_wall_s", "run_folder"]
    assert again[compared].equals(baselines[compared])
    run.run_notebook("06_layer_sweep", {**small, "k_values": [1, "all"]}, profile="smoke", output=tmp_path / "06.ipynb",
                     progress=False)
    (sweep_csv,) = (tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-layer-sweep.csv")
    sweep = pd.read_csv(sweep_csv)
    assert sweep["K"].tolist() == [1, 3] and sweep["params_trained"].is_monotonic_increasing

    limited_params = {k: v for k, v in small.items() if k != "n_train_users"}
    run.run_notebook("07_limited_data", {**limited_params, "sizes": [4, 6], "n_subsets": 2, "top_k_layers": 1, "epochs": 2,
                                         "write_reference": True}, profile="smoke", output=tmp_path / "07.ipynb",
                     progress=False)
    (limited_dir,) = (tmp_path / "out" / "xcross").glob("Toys-Tools+Sports-*-limited-K1")
    runs = pd.read_csv(limited_dir / "runs.csv")
    assert len(runs) == 2 * 2 * 2 and set(runs["model"]) == {"X-Cross", "LoRA"}
    assert (runs["length_mean"] > 0).all() and runs["n_users"].eq(8).all()
    # each run's training time and kept step (validation), and no training copied from elsewhere here
    assert (runs["train_wall_s"] > 0).all() and runs["kept_step"].between(0, 2).all()  # 2 epochs of one batch
    assert runs["train_adopted_from"].isna().all()
    # X-Cross and the target LoRA of every size and subset keep their step on the same validation users
    definitions = [json.loads(p.read_text())["definition"] for p in (limited_dir / "runs").glob("*/run_definition.json")]
    assert len(definitions) == 8 and len({json.dumps(d["validation_users"]) for d in definitions}) == 1
    limited = pd.read_csv(tmp_path / "out" / "reference" / "limited_data_toys.csv")
    assert sorted(limited["size"]) == [4, 4, 6, 6] and limited["subsets"].eq(2).all()
    assert limited["p (X-Cross vs LoRA, hit@1)"].between(0, 1).all()
    # MRR beside Hit@1, and each model against the best source's own per-user results
    assert limited["p (X-Cross vs LoRA, mrr)"].between(0, 1).all() and limited["p (vs reference, mrr)"].between(0, 1).all()
    assert (limited["reference (best zero-shot MRR)"] >= limited["reference (best zero-shot Hit@1)"]).all()
    assert (limited["mrr mean"] >= limited["mean"]).all()  # a user's reciprocal rank is at least their Hit@1
    assert {"smallest size significantly beating the reference (X-Cross, mrr)", "largest_size_significant (mrr)"} <= set(limited)
    # each run shipped as it finished: a clone without the study's folder takes them and trains nothing
    (shipped_study,) = (tmp_path / "out" / "reference" / "limited_data").glob(f"{limited_dir.name}-*")
    assert len(list(shipped_study.glob("*.parquet"))) == 8 and not (shipped_study / "runs").exists()
    # read back for a study still running: each run's users and mean as its run table says
    shipped = shipped_per_user(shipped_study).groupby(["model", "size", "subset"])
    assert shipped.size().eq(8).all() and len(shipped) == 8
    means = (100 * shipped["mrr"].mean()).round(3).rename("mrr").reset_index()
    assert means.merge(runs, on=["model", "size", "subset"], suffixes=("", " (runs.csv)")).pipe(
        lambda m: ((m["mrr"] - m["mrr (runs.csv)"]).abs() < 1e-3).sum()) == 8
    shutil.rmtree(limited_dir)
    run.run_notebook("07_limited_data", {**limited_params, "sizes": [4, 6], "n_subsets": 2, "top_k_layers": 1, "epochs": 2,
                                         "write_reference": True}, profile="smoke", output=tmp_path / "07-b.ipynb",
                     progress=False)
    assert not (limited_dir / "runs").exists()  # nothing trained
    again = pd.read_csv(limited_dir / "runs.csv")
    assert again.equals(runs)  # every run's metrics, prompt lengths, parameters and wall time, as shipped
    run.run_notebook("09_convergence", {"model": None}, output=tmp_path / "09.ipynb", progress=False)
    ols = pd.read_csv(tmp_path / "out" / "convergence_ols.csv", index_col=0)
    # the two sizes are held fixed by default (one study read: no term for it)
    assert list(ols.index) == ["Intercept", "C(model)[T.X-Cross]", "C(size)[T.6]", "length_mean", "length_std"]
    assert ols["n_runs"].eq(8).all()
    with pytest.raises(ParameterError, match="fixed_effects = \\['sizes'\\]"):
        run.run_notebook("09_convergence", {"fixed_effects": ["sizes"]}, output=tmp_path / "09-typo.ipynb", progress=False)
    report = nbformat.read(run.run_notebook("10_report", {}, output=tmp_path / "10.ipynb", progress=False), as_version=4)
    shown = json.dumps([o for c in report.cells for o in c.get("outputs", [])])
    # every section has results: this run's, and the repository's shipped ones (the learning curve)
    assert "Tools-LoRA" in shown and "- Layers" in shown and "MeteoRA" in shown and "no results yet" not in shown
    html = (tmp_path / "out" / "report.html").read_text()  # the report as a reader sees it: no code
    assert "report.our_table2" not in html and "Table 2: every model on every target" in html
    assert "Table 2" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.unit
def test_papermill_reads_every_name_of_each_parameters_cell():
    import ast

    for path in NOTEBOOKS_DIR.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
        assert set(run.notebook_parameters(path)) == assigned, path.name


@pytest.mark.unit
def test_a_profile_value_over_a_notebook_word_default_is_announced(capsys):
    params = run.resolve_parameters("11_learning_curve", {"epochs": 1, "n_val_users": 500}, {})
    assert params["epochs"] == 1
    err = capsys.readouterr().err
    assert "the profile sets epochs = 1 over 11_learning_curve.ipynb's own default 'auto'" in err
    run.resolve_parameters("11_learning_curve", {"epochs": 1}, {"epochs": "auto"})  # given: nothing to say
    run.resolve_parameters("03_xcross", {"epochs": 1}, {})  # 03's default is a number: nothing to say
    assert "note:" not in capsys.readouterr().err
