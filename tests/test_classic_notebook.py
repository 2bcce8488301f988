"""Notebook 12 end to end on tiny made data: the classic models beside the reference rows and a
source model, on 30 candidates and over all items."""

import pandas as pd
import pytest

from xcross_lib import run

pytestmark = pytest.mark.smoke


def test_notebook_12_writes_both_tables_with_every_row(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    run.run_notebook("01_source_lora", {**common, "domain": "Tools", "backbone": "tiny-bert", "n_train_users": 8,
                                        "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False},
                     profile="smoke", output=tmp_path / "01.ipynb", progress=False)
    run.run_notebook("12_classic", {**common, "target": "Tools", "models": "SASRec,S3Rec", "max_epochs": 2,
                                    "pretrain_budget_s": 0}, profile="smoke", output=tmp_path / "12.ipynb", progress=False)
    table = pd.read_csv(tmp_path / "out" / "classic" / "classic_tools.csv")
    assert set(table["model"]) == {"SASRec", "S3Rec", "random", "popularity", "text similarity", "Tools source model"}
    assert (table["n_users"] == 8).all()  # every test user of the made domain (40 users, 3:1:1)
    classic = table.set_index("model").loc[["SASRec", "S3Rec"]]
    assert classic["model_files"].str.contains("classic/Tools/").all() and classic["model_sha256"].str.len().eq(10).all()
    assert (classic["epochs_run"] <= 2).all() and classic.loc["S3Rec", "pretrain_epochs_run"] == 1
    assert table["p (Tools source model vs this, mrr)"].drop(table.index[table["model"] == "Tools source model"]).notna().all()
    full = pd.read_csv(tmp_path / "out" / "classic" / "full_ranking_tools.csv").set_index("model")
    assert set(full.index) == {"SASRec", "S3Rec", "random", "popularity", "Tools source model"}
    # the same scores ranked among all items can only rank the target lower than among 30 of them
    same_scores = full.drop(index="random")  # random draws its full-ranking scores anew
    assert (same_scores["full mrr"] <= same_scores["sampled mrr"] + 1e-9).all()
    assert full["spearman (orders by mrr)"].nunique() == 1
    # a second run reuses the finished models (their folders hold the same definition)
    before = sorted(p.stat().st_mtime for p in (tmp_path / "out" / "classic" / "Tools").glob("*/model.pt"))
    run.run_notebook("12_classic", {**common, "target": "Tools", "models": "SASRec,S3Rec", "max_epochs": 2,
                                    "pretrain_budget_s": 0}, profile="smoke", output=tmp_path / "12b.ipynb", progress=False)
    after = sorted(p.stat().st_mtime for p in (tmp_path / "out" / "classic" / "Tools").glob("*/model.pt"))
    assert before == after
