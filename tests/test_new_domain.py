"""A domain of your own: made from plain tables or Amazon raw files, named by its folder, and run
through notebooks 00, 02 and 03 by that name with no code change."""

import gzip
import json

import pandas as pd
import pytest

from xcross_lib import run
from xcross_lib.data import load_domain, resolve_domain, resolve_domains
from xcross_lib.data.make_domain import from_tables, main as make_domain_main
from xcross_lib.data.paths import found_domains
from xcross_lib.errors import DataError, ParameterError

from conftest import random_domain, write_domain

DAY = 86_400


def made_tables(tmp_path, fmt="csv"):
    """Six users of a garden shop; user u4 has one item only, item G9 has no title."""
    rows = []
    for u, items in {"u1": ["G1", "G2", "G3", "G4"], "u2": ["G2", "G3", "G1"], "u3": ["G4", "G1", "G2", "G9"],
                     "u4": ["G3"], "u5": ["G1", "G4", "G2"], "u6": ["G3", "G2", "G4", "G1"]}.items():
        rows += [{"user": u, "item": i, "time": 1_600_000_000 + k * DAY} for k, i in enumerate(reversed(items))]
    inter = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # file order is not time order
    titles = pd.DataFrame({"item": ["G1", "G2", "G3", "G4", "G9"],
                           "title": ["Steel garden spade with a long ash handle", "Rake", "Hose 20 m", "Gloves", ""]})
    if fmt == "csv":
        inter.to_csv(tmp_path / "clicks.csv", index=False)
        titles.to_csv(tmp_path / "items.csv", index=False)
        return tmp_path / "clicks.csv", tmp_path / "items.csv"
    inter.to_parquet(tmp_path / "clicks.parquet")
    titles.to_parquet(tmp_path / "items.parquet")
    return tmp_path / "clicks.parquet", tmp_path / "items.parquet"


@pytest.mark.unit
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_domain_from_plain_tables_keeps_time_order_and_the_rules_asked_for(tmp_path, fmt):
    clicks, items = made_tables(tmp_path, fmt)
    dest = from_tables(clicks, items, tmp_path / "data" / "Garden", title_words=3)
    domain = load_domain("Garden", tmp_path / "data")
    assert domain.name == "Garden" and len(domain.sequences) == 5  # u4 (one item) dropped by min_items 2
    umap = json.loads((dest / "umap.json").read_text())
    smap = {v: k for k, v in json.loads((dest / "smap.json").read_text()).items()}
    seq_u1 = [smap[i] for i in json.loads((dest / "train.json").read_text())[str(umap["u1"])]]
    assert seq_u1 == ["G4", "G3", "G2", "G1"]  # oldest first (the times run backwards through the list)
    seq_u3 = [smap[i] for i in json.loads((dest / "train.json").read_text())[str(umap["u3"])]]
    assert "G9" not in seq_u3 and len(seq_u3) == 3  # the untitled item is dropped
    assert json.loads((dest / "meta_data.json").read_text())["G1"] == "Steel garden spade"  # cut to 3 words
    # the paper's rules where asked: 3-core keeps users and items with at least 3 interactions
    strict = from_tables(clicks, items, tmp_path / "data2" / "Garden", k=3, min_items=4, max_items=4)
    kept = json.loads((strict / "umap.json").read_text())
    assert set(kept) == {"u1", "u6"}


@pytest.mark.unit
def test_bad_tables_are_named_with_the_fix(tmp_path):
    clicks, items = made_tables(tmp_path)
    with pytest.raises(DataError, match="no column 'timestamp'.*the columns are user, item, time"):
        from_tables(clicks, items, tmp_path / "x", order_column="timestamp")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown table format '.xlsx'"):
        from_tables(tmp_path / "t.xlsx", items, tmp_path / "x")
    with pytest.raises(DataError, match="no user .* is left"):
        from_tables(clicks, items, tmp_path / "x", min_items=10)
    assert make_domain_main(["table", "--interactions", str(tmp_path / "none.csv"), "--titles", str(items),
                             "--dest", str(tmp_path / "x")]) == 2


@pytest.mark.unit
def test_a_domain_from_amazon_raw_files_by_command(tmp_path, capsys):
    reviews, meta = tmp_path / "reviews.json.gz", tmp_path / "meta.json"
    with gzip.open(reviews, "wt") as f:
        for u in range(6):
            for k, item in enumerate(["B1", "B2", "B3", "B4", "B5", "B6"]):
                f.write(json.dumps({"reviewerID": f"R{u}", "asin": item, "unixReviewTime": 1_500_000_000 + k * DAY}) + "\n")
    meta.write_text("".join(json.dumps({"asin": f"B{i}", "title": f"Game number {i}"}) + "\n" for i in range(1, 7)))
    assert make_domain_main(["amazon", "--reviews", str(reviews), "--meta", str(meta),
                             "--dest", str(tmp_path / "data" / "VideoGames")]) == 0
    assert "its domain name is 'VideoGames'" in capsys.readouterr().out
    assert len(load_domain("VideoGames", tmp_path / "data").sequences) == 6


@pytest.mark.unit
def test_domains_are_the_folders_of_the_data_directory(tiny_data_dir):
    sequences, titles = random_domain(seed=9)
    write_domain(tiny_data_dir, "Garden", sequences, titles, test_users=8)
    assert found_domains(tiny_data_dir) == ["Tools", "Toys", "Sports", "Electronics", "Garden"]
    assert resolve_domain("garden", tiny_data_dir) == "Garden"
    assert resolve_domains("all", tiny_data_dir)[-1] == "Garden"
    with pytest.raises(ParameterError) as e:
        resolve_domain("Gardn", tiny_data_dir)
    msg = str(e.value)
    assert f"the domains found in {tiny_data_dir} are Tools, Toys, Sports, Electronics, Garden" in msg
    assert "Did you mean 'Garden'" in msg and "make_domain" in msg
    with pytest.raises(ParameterError, match="target = 'Gardn'"):  # the runner refuses it before the kernel starts
        run.resolve_parameters("03_xcross", {}, {"target": "Gardn", "data_dir": str(tiny_data_dir)})


@pytest.mark.smoke
def test_a_fifth_domain_runs_through_00_02_and_03_by_its_own_name(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "out"))
    sequences, titles = random_domain(seed=9)
    write_domain(tiny_data_dir, "Garden", sequences, titles, test_users=8)
    common = {"data_dir": str(tiny_data_dir), "max_length": 64}
    run.run_notebook("00_data", {"domains": "Garden", "data_dir": str(tiny_data_dir)}, profile="smoke",
                     output=tmp_path / "00.ipynb", progress=False)
    summary = pd.read_csv(tmp_path / "out" / "data" / "data_summary.csv")
    assert summary["domain"].tolist() == ["Garden"] and summary["users"].iloc[0] == 40
    for domain in ("Tools", "Sports"):  # two source models; Garden has none of its own
        run.run_notebook("01_source_lora", {**common, "domain": domain, "backbone": "tiny-bert", "n_train_users": 8,
                                            "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False},
                         profile="smoke", output=tmp_path / f"01-{domain}.ipynb", progress=False)
    run.run_notebook("02_zero_shot", {**common, "sources": "Tools,Sports", "targets": "Garden,Tools",
                                      "n_test_users": 8, "n_val_users": 8}, profile="smoke",
                     output=tmp_path / "02.ipynb", progress=False)
    matrix = pd.read_csv(tmp_path / "out" / "zero_shot" / "zero_shot_matrix.csv")
    garden = matrix[(matrix["target"] == "Garden") & (matrix["split"] == "test")]
    assert set(garden["source"]) == {"Tools", "Sports", "random", "popularity", "text similarity"}
    top = json.loads((tmp_path / "out" / "zero_shot" / "top_sources.json").read_text())
    assert sorted(top["Garden"]) == ["Sports", "Tools"]  # both others: a target without a model of its own
    run.run_notebook("03_xcross", {**common, "target": "Garden", "sources": "auto", "n_train_users": 8,
                                   "n_val_users": 8, "n_test_users": 8, "train_candidates": 4, "bf16": False,
                                   "top_k_layers": 1}, profile="smoke", output=tmp_path / "03.ipynb", progress=False)
    (xdir,) = (tmp_path / "out" / "xcross").glob("Garden-*-full-K1-*")
    table = pd.read_csv(xdir / "test_results.csv")
    assert table["model"].iloc[0] == "X-Cross" and (table["n_users"] == 8).all()
    assert json.loads((xdir / "xcross.json").read_text())["target"] == "Garden"
