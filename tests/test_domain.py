import json
import math

import pytest

from xcross_lib.data import find_data_dir, load_domain, resolve_domain, resolve_domains
from xcross_lib.data.paths import DOMAINS
from xcross_lib.errors import DataError, ParameterError

from conftest import write_domain

pytestmark = pytest.mark.unit

SEQS = {0: [0, 1, 2], 1: [2, 3, 1, 0], 2: [3, 0]}
TITLES = {0: "Hammer &amp; nails", 1: "Drill", 2: "Saw", 3: "Tape"}


@pytest.fixture
def data_dir(tmp_path):
    write_domain(tmp_path, "Tools", SEQS, TITLES, test_users=1)
    return tmp_path


def test_load_pools_train_and_test_in_time_order(data_dir):
    d = load_domain("tools", data_dir)
    assert d.name == "Tools"
    assert d.sequences == SEQS  # user 2 came from test.json
    assert d.titles[0] == "Hammer &amp; nails"  # stored as is; prompts unescape
    assert d.summary() == {
        "domain": "Tools", "users": 3, "items": 4, "interactions": 9, "density": 9 / 12,
        "seq_len_mean": 3.0, "seq_len_min": 2, "seq_len_max": 4, "untitled_items": 0,
    }
    assert len(d.fingerprint) == 64


def test_environment_variable_and_missing_directory(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("XCROSS_DATA_DIR", str(data_dir))
    assert find_data_dir() == data_dir
    empty = tmp_path / "nothing-here"
    with pytest.raises(DataError) as e:
        find_data_dir(empty)
    msg = str(e.value)
    assert str(empty) in msg and "XCROSS_DATA_DIR" in msg and "xcross_lib.data.download" in msg


def test_search_order_lists_every_place(monkeypatch, tmp_path):
    monkeypatch.delenv("XCROSS_DATA_DIR", raising=False)
    monkeypatch.setenv("XCROSS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    import xcross_lib.data.paths as paths

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataError) as e:
        find_data_dir()
    msg = str(e.value)
    for place in (tmp_path / "shared" / "data" / "amazon2018-xcross", tmp_path / "cache"):
        assert str(place) in msg
    monkeypatch.setenv("XCROSS_DATA_DIR", str(tmp_path / "a"))  # set: used or refused, never passed over
    with pytest.raises(DataError) as e:
        find_data_dir()
    assert str(tmp_path / "a") in str(e.value) and "cache" not in str(e.value)


def test_unknown_domain_suggests_the_nearest():
    assert resolve_domains("all") == list(DOMAINS)
    assert resolve_domains("sports, Tools") == ["Sports", "Tools"]
    with pytest.raises(ParameterError, match="Did you mean 'Toys'"):
        resolve_domain("Toyz")
    with pytest.raises(ParameterError, match="unknown domain 'Books'"):
        resolve_domains(["Tools", "Books"])


def test_missing_domain_folder_names_the_fix(data_dir):
    with pytest.raises(DataError, match=r"Sports: .* lacks train.json.*--domains Sports"):
        load_domain("Sports", data_dir)


@pytest.mark.parametrize(
    "text, word",
    [('{"0": [0, 1, 2], "1": [2, 3', "truncated"), ('{"0": [0, 1, 2] "1": [2]}', "malformed")],
)
def test_bad_json_names_file_and_place(data_dir, text, word):
    (data_dir / "Tools" / "train.json").write_text(text)
    with pytest.raises(DataError) as e:
        load_domain("Tools", data_dir)
    msg = str(e.value)
    assert "train.json" in msg and word in msg and "line 1" in msg and "download" in msg


def test_wrong_structure_is_refused(data_dir):
    (data_dir / "Tools" / "train.json").write_text(json.dumps({"0": "not a list"}))
    with pytest.raises(DataError, match="list of item indices"):
        load_domain("Tools", data_dir)


def test_item_without_title_is_an_error(data_dir):
    titles = dict(TITLES)
    del titles[3]
    meta = {f"A{i:04d}": t for i, t in titles.items()}
    (data_dir / "Tools" / "meta_data.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"1 item\(s\) of the sequences have no title: item 3 = A0003"):
        load_domain("Tools", data_dir)


def test_null_title_warns_or_errors(tmp_path):
    write_domain(tmp_path, "Sports", SEQS, {**TITLES, 1: math.nan})  # Sports has three such items
    with pytest.warns(UserWarning, match=r"1 item\(s\) have an empty or null title.*A0001"):
        d = load_domain("Sports", tmp_path)
    assert d.titles[1] == "(no title)" and d.untitled == [1]
    with pytest.raises(DataError, match="empty or null title"):
        load_domain("Sports", tmp_path, missing_titles="error")


def test_user_with_fewer_than_two_items(tmp_path):
    write_domain(tmp_path, "Toys", {**SEQS, 7: [1]}, TITLES)
    with pytest.raises(DataError, match=r"1 user\(s\) have fewer than 2 items \(e.g. user 7"):
        load_domain("Toys", tmp_path)
