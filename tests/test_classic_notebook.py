"""Notebook 12 end to end on tiny made data: the classic models beside the reference rows and a
source model, on 30 candidates and over all items."""

import json

import pandas as pd
import pytest

from xcross_lib import run

pytestmark = pytest.mark.smoke


def test_notebook_12_writes_both_tables_with_every_row(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    # titles whose words are shared by 2 or 3 of the 60 items: attributes for FDSA and S3-Rec
    meta = tiny_data_dir / "Tools" / "meta_data.json"
    meta.write_text(json.dumps({asin: f"part{int(asin[1:]) // 2} kit{int(asin[1:]) // 3}"
                                for asin in json.loads(meta.read_text())}))
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    run.run_notebook("01_source_lora", {**common, "domain": "Tools", "backbone": "tiny-bert", "n_train_users": 8,
                                        "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                        "encoding": "separate"},
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
    from xcross_lib import single_domain
    from xcross_lib.experiments import DomainData

    data = DomainData.load("Tools", tiny_data_dir)
    test = data.frames["test"]
    seen = {i for u in data.frames["train"]["user"] for i in data.domain.sequences[int(u)]}
    cold = ~test["target"].isin(seen)
    ranks = pd.DataFrame({"user": test["user"], "rank": [1 + k % 4 for k in range(len(test))]}).assign(
        mrr=lambda f: 1 / f["rank"])
    (row,) = single_domain.cold_target_table(data, {"m": ranks}).to_dict("records")
    assert row["cold-target users"] == cold.sum() == single_domain.cold_items(data)["test targets unseen in training"]
    assert row["MRR (other users)"] == pytest.approx(round(100 * ranks.loc[~cold.to_numpy(), "mrr"].mean(), 2))
    search = single_domain.classic_search(data)  # validation figures only
    assert sorted(search["model"]) == ["S3Rec", "SASRec"] and search["best for model (validation)"].all()
    assert not any(c.startswith(("hit@", "mrr", "ndcg", "test")) for c in search.columns)
    assert search["validation_mrr"].tolist() == [round(100 * json.loads(p.read_text())["validation_mrr"], 2) for p in
                                                 sorted((tmp_path / "out" / "classic" / "Tools").glob("*/summary.json"))]


def test_fdsa_without_attribute_words_is_refused_with_the_fix(tiny_data_dir, tmp_path, monkeypatch):
    from xcross_lib.errors import DataError
    from xcross_lib.experiments import DomainData
    from xcross_lib.single_domain import classic_catalogue

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    data = DomainData.load("Tools", tiny_data_dir)  # titles "Item i &amp; thing number i % 7": no word in 2 to 3 titles
    with pytest.raises(DataError, match="FDSA reads item attributes.*-p models SASRec,BERT4Rec"):
        classic_catalogue("FDSA", data)
    assert classic_catalogue("SASRec", data).num("item_id") == 61


def test_a_learning_curve_xcross_is_rebuilt_verified_and_ranked_over_all_items(tiny_data_dir, tmp_path, monkeypatch):
    from xcross_lib import single_domain
    from xcross_lib.errors import DataError
    from xcross_lib.experiments import DomainData

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    for domain in ("Tools", "Sports"):
        run.run_notebook("01_source_lora", {**common, "domain": domain, "backbone": "tiny-bert", "n_train_users": 8,
                                            "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                            "encoding": "separate"},
                         profile="smoke", output=tmp_path / f"01-{domain}.ipynb", progress=False)
    run.run_notebook("11_learning_curve", {**common, "target": "Toys", "sources": "Tools,Sports", "model": "X-Cross",
                                           "n_train_users": 8, "epochs": 2, "n_val_users": 8, "train_candidates": 4,
                                           "learning_rate": 3e-2, "validate_every": 1, "bf16": False,
                                           "write_reference": True},
                     profile="smoke", output=tmp_path / "11.ipynb", progress=False)
    data = DomainData.load("Toys", tiny_data_dir)
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
