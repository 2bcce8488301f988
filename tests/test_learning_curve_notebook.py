"""Notebook 11 on tiny made data: a search point (validated, not tested) scored on test later without
training again, and its X-Cross rebuilt from its definition, checked against its own candidate ranks
and ranked over every item (notebook 12's X-Cross row)."""

import json

import pandas as pd
import pytest

from xcross_lib import run

pytestmark = pytest.mark.smoke


def test_a_searched_point_is_tested_later_and_its_xcross_ranked_over_all_items(tiny_data_dir, tmp_path, monkeypatch):
    from xcross_lib import single_domain
    from xcross_lib.errors import DataError
    from xcross_lib.experiments import DomainData, evaluate_source, seeded_subset, users_digest

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    for domain in ("Tools", "Sports", "Toys"):  # Toys: the target's own model, the in-domain row
        run.run_notebook("01_source_lora", {**common, "domain": domain, "backbone": "tiny-bert", "n_train_users": 8,
                                            "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                            "encoding": "separate"},
                         profile="smoke", output=tmp_path / f"01-{domain}.ipynb", progress=False)
    point_params = {**common, "target": "Toys", "sources": "Tools,Sports", "model": "X-Cross", "n_train_users": 8,
                    "epochs": 2, "n_val_users": 8, "train_candidates": 4, "learning_rate": 3e-2, "validate_every": 1,
                    "bf16": False, "write_reference": True}
    # first a search point: trained and validated, its test users not scored
    run.run_notebook("11_learning_curve", {**point_params, "score_test": False}, profile="smoke",
                     output=tmp_path / "11-search.ipynb", progress=False)
    reference = tmp_path / "out" / "reference"
    (searched,) = reference.glob("learning_curve/Toys-*/X-Cross-n8-*/point.json")
    assert not (searched.parent / "test_per_user.parquet").exists()
    search = pd.read_csv(reference / "search_learning_curve_toys.csv")
    assert search["test_scored"].tolist() == [False] and search["learning_rate"].tolist() == [3e-2]
    assert not any(c.startswith(("hit@", "mrr", "p ")) for c in search.columns)  # validation figures only
    assert "X-Cross" not in set(pd.read_csv(reference / "learning_curve_toys.csv")["model"])  # not on the curve
    trained = json.loads(searched.read_text())
    # then chosen: the same point scored on test, without training again
    run.run_notebook("11_learning_curve", point_params, profile="smoke", output=tmp_path / "11.ipynb", progress=False)
    final = json.loads(searched.read_text())
    assert final["test_scored"] and final["curve"] == trained["curve"] and final["validation"] == trained["validation"]
    assert final["train_wall_s"] == trained["train_wall_s"] and "test_scored_at" in final
    assert pd.read_csv(reference / "search_learning_curve_toys.csv")["test_scored"].tolist() == [True]
    curve = pd.read_csv(reference / "learning_curve_toys.csv")
    assert "X-Cross" in set(curve["model"])
    # the target's own model is a row, scored on the same test users, shipped with its definition
    data = DomainData.load("Toys", tiny_data_dir)
    in_domain = curve.set_index("model").loc["Toys alone (in-domain)"]
    own = evaluate_source("Toys", data, data.frames["test"], 64)
    assert in_domain["mrr"] == pytest.approx(round(100 * own["mrr"].mean(), 2))
    (shipped,) = reference.glob("learning_curve/Toys-*/in-domain-*/in_domain.parquet")
    assert json.loads((shipped.parent / "run_definition.json").read_text())["definition"]["model"]["name"] == "Toys"
    point_row = curve.set_index("model").loc["X-Cross"]
    assert point_row["mdd mrr vs Toys alone (in-domain)"] > 0 and "p mrr vs Toys alone (in-domain)" in curve
    folder, per_user = single_domain.largest_xcross_point(data)
    assert folder.parent.parent.name == "learning_curve" and len(per_user) == len(data.frames["test"]) == 8
    row = single_domain.xcross_point_rows(data, folder, progress=False)
    # the rebuilt model gave the point's own candidate ranks (checked inside); over all items the
    # same scores can only rank each target as low or lower
    both = row["sampled"].merge(row["full"], on="user", suffixes=("_sampled", "_full"))
    assert len(both) == 8 and (both["rank_full"] >= both["rank_sampled"]).all()
    assert (both["rank_full"] > both["rank_sampled"]).any()  # 60 items, 30 candidates: some other item outranks
    point = json.loads((folder / "point.json").read_text())
    assert row["model_sha256"] == ("untrained" if point["kept_step"] == 0 else row["model_sha256"])
    assert point["kept_step"] == 0 or len(row["model_sha256"]) == 10
    # another point's ranks (here: shifted by one) are not reproduced: refused, not reported
    shifted = per_user.assign(rank=per_user["rank"] + 1)
    shifted.to_parquet(folder / "test_per_user.parquet")
    with pytest.raises(DataError, match="does not give the point's own candidate ranks"):
        single_domain.xcross_point_rows(data, folder, progress=False)
    per_user.to_parquet(folder / "test_per_user.parquet")
    # a trained point whose weights are not on this machine keeps its sampled row, without a full one
    point["kept_step"] = max(point["kept_step"], 1)
    (folder / "point.json").write_text(json.dumps(point))
    for best in (tmp_path / "out" / "xcross").glob(f"*/{folder.name}/run/best.pt"):
        best.unlink()
    missing = single_domain.xcross_point_rows(data, folder, progress=False)
    assert missing["full"] is None and missing["sampled"]["rank"].equals(per_user["rank"])
    # a target LoRA point keeps its step on the curve's validation users, in the folder its definition names
    run.run_notebook("11_learning_curve", {**point_params, "model": "LoRA", "epochs": 1}, profile="smoke",
                     output=tmp_path / "11-lora.ipynb", progress=False)
    (lora,) = reference.glob("learning_curve/Toys-*/LoRA-n8-*/point.json")
    (claimed,) = (tmp_path / "out" / "xcross").glob(f"*/{lora.parent.name}/run_definition.json")
    stored = json.loads(claimed.read_text())
    val = seeded_subset(data.frames["validation"], 8, 0)
    assert stored["definition"]["validation_users"] == users_digest(val) and lora.parent.name.endswith(stored["digest"])
    assert json.loads(lora.read_text())["n_val_users"] == len(val)


def test_device_script_runs_the_notebooks_points_in_bf16_under_their_own_digest(tiny_data_dir, tmp_path, monkeypatch):
    """benchmarks/device_learning_curve.py on tiny data, on this CPU: notebook 11's settings with bf16 in
    the definition, every point's record naming the device, the archive holding the points and tables,
    and no point started past the budget once the pace is known."""
    import importlib.util
    import tarfile

    from xcross_lib.paths import REPO_ROOT

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "dev" / "outputs"))
    monkeypatch.setenv("XCROSS_DATA_DIR", str(tiny_data_dir))
    for domain in ("Tools", "Sports"):
        run.run_notebook("01_source_lora", {"data_dir": str(tiny_data_dir), "max_length": 64, "domain": domain,
                                            "backbone": "tiny-bert", "n_train_users": 8, "n_val_users": 8,
                                            "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                            "encoding": "separate"},
                         profile="smoke", output=tmp_path / f"01-{domain}.ipynb", progress=False)
    spec = importlib.util.spec_from_file_location("device_lc", REPO_ROOT / "benchmarks" / "device_learning_curve.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.notebook_defaults()["learning_rate"] == 3e-4  # notebook 11's own parameters cell
    from xcross_lib.errors import ParameterError
    with pytest.raises(ParameterError, match="learning_rate = 0"):  # the notebook's rules, before any work
        script.main(["--out", str(tmp_path / "bad"), "-p", "learning_rate", "0"])
    assert not (tmp_path / "bad").exists()
    small = ["-p", "n_val_users", "8", "-p", "train_candidates", "4", "-p", "validate_every", "1", "-p", "max_length", "64"]
    script.main(["--out", str(tmp_path / "dev"), "--archive", str(tmp_path / "back"), "--budget-s", "0",
                 "--targets", "Toys", "--sizes", "8,all", "--models", "X-Cross", "--sources", "Tools,Sports", *small])
    assert not (tmp_path / "dev" / "learning_curve_device.tar.gz").exists()  # the archive goes where it is asked
    with tarfile.open(tmp_path / "back" / "learning_curve_device.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    points = sorted((tmp_path / "unpacked" / "learning_curve").glob("Toys-*/X-Cross-n*/point.json"))
    assert [json.loads(p.read_text())["size"] for p in points] == [8]  # the whole split: not started, past the budget
    record = json.loads(points[0].read_text())
    assert record["bf16"] is True and record["device"] == "cpu" and record["learning_rate"] == 3e-4
    assert str(tmp_path) not in record["command"] and "--archive $OUT" in record["command"]
    definition = json.loads((points[0].parent / "run_definition.json").read_text())["definition"]
    assert definition["train"]["bf16"] is True  # so never the digest of a CPU point, whose bf16 is "auto"
    table = pd.read_csv(tmp_path / "unpacked" / "tables" / "learning_curve_toys.csv")
    (row,) = table[table["model"] == "X-Cross"].to_dict("records")
    assert row["size"] == 8 and row["device"] == "cpu" and row["n_users"] == 8
    assert "tables/search_learning_curve_toys.csv" in names
