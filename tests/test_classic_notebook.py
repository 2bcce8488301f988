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
    # a setting that lost (made here from SASRec's folder): shipped as a search record, not as a run
    import shutil

    local = tmp_path / "out" / "classic" / "Tools"
    lost = local / "SASRec-0123456789"
    shutil.copytree(next(local.glob("SASRec-*")), lost)
    (lost / "summary.json").write_text(json.dumps({**json.loads((lost / "summary.json").read_text()), "validation_mrr": 0.0}))
    # a clean clone has only the committed copies (no weights): a rerun rebuilds the same table from them
    run.run_notebook("12_classic", {**common, "target": "Tools", "models": "SASRec,S3Rec", "max_epochs": 2,
                                    "pretrain_budget_s": 0, "write_reference": True}, profile="smoke",
                     output=tmp_path / "12c.ipynb", progress=False)
    shipped = tmp_path / "out" / "reference" / "classic" / "Tools"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in (tmp_path / "out" / "classic" / "Tools").iterdir())
    assert not list(shipped.glob("*/model.pt"))
    assert sorted(p.name for p in (shipped / lost.name).iterdir()) == ["run_definition.json", "summary.json"]
    committed = pd.read_csv(tmp_path / "out" / "reference" / "classic_tools.csv")
    assert lost.name not in committed["model_files"].str.cat()
    searched = tmp_path / "out" / "reference" / "search_classic_tools.csv"
    assert sorted(pd.read_csv(searched)["folder"]) == sorted(p.name for p in local.iterdir())
    # a row of a run kept nowhere (trained on another machine): kept, with its own stamp
    elsewhere = pd.read_csv(searched).iloc[[0]].assign(model="SASRec", folder="SASRec-elsewhere", validation_mrr=99.0, commit="abc")
    pd.concat([pd.read_csv(searched), elsewhere]).to_csv(searched, index=False)
    shutil.rmtree(tmp_path / "out" / "classic")
    sasrec = next(p for p in shipped.glob("SASRec-*") if p.name != lost.name)
    definition = json.loads((sasrec / "run_definition.json").read_text())
    (sasrec / "run_definition.json").write_text(json.dumps({**definition, "definition": {**definition["definition"], "recbole": "0.0"}}))
    run.run_notebook("12_classic", {**common, "target": "Tools", "models": "SASRec,S3Rec", "max_epochs": 2,
                                    "pretrain_budget_s": 0, "write_reference": True}, profile="smoke",
                     output=tmp_path / "12d.ipynb", progress=False)
    retrained = {p.parent.name for p in (tmp_path / "out" / "classic" / "Tools").glob("*/model.pt")}
    assert retrained == {sasrec.name}  # another definition's copy is trained again; S3Rec's own copy reused
    search = pd.read_csv(searched).set_index("folder")  # every setting tried, here, shipped, or earlier only
    assert set(search.index) == {p.name for p in shipped.iterdir()} | {"SASRec-elsewhere"}
    assert len(search) == 4 and lost.name in search.index
    assert search.loc["SASRec-elsewhere", "commit"] == "abc" and search.loc[lost.name, "commit"] != "abc"
    best = search[search["best for model (validation)"]]
    assert set(best.index) == {"SASRec-elsewhere", next(p.name for p in shipped.glob("S3Rec-*"))}
    again = pd.read_csv(tmp_path / "out" / "reference" / "classic_tools.csv").set_index("model")
    s3rec = committed.set_index("model").loc["S3Rec"]
    assert again.loc["S3Rec", ["mrr", "hit@1", "model_files", "model_sha256", "train_s"]].tolist() == \
        s3rec[["mrr", "hit@1", "model_files", "model_sha256", "train_s"]].tolist()


def test_fdsa_without_attribute_words_is_refused_with_the_fix(tiny_data_dir, tmp_path, monkeypatch):
    from xcross_lib.errors import DataError
    from xcross_lib.experiments import DomainData
    from xcross_lib.single_domain import classic_catalogue

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    data = DomainData.load("Tools", tiny_data_dir)  # titles "Item i &amp; thing number i % 7": no word in 2 to 3 titles
    with pytest.raises(DataError, match="FDSA reads item attributes.*-p models SASRec,BERT4Rec"):
        classic_catalogue("FDSA", data)
    assert classic_catalogue("SASRec", data).num("item_id") == 61

