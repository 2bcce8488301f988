import gzip
import json

import pandas as pd
import pytest

from xcross_lib.data import load_domain
from xcross_lib.data.raw import (
    SECONDS_PER_DAY,
    build_domain,
    build_sequences,
    cut_title,
    k_core,
    one_per_day,
    read_reviews,
)
from xcross_lib.errors import DataError

pytestmark = pytest.mark.unit

DAY = SECONDS_PER_DAY


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def write_jsonl(path, records, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_k_core_repeats_until_stable():
    df = frame([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "b", 2),
                ("u3", "c", 1), ("u3", "d", 2)])
    # round 1 drops item d (1 user); round 2 drops u3 (now 1 item); round 3 drops item c (now 1 user)
    out = k_core(df, k=2)
    assert sorted(map(tuple, out[["user", "item"]].values.tolist())) == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]


def test_one_interaction_per_user_and_day_is_seeded():
    df = frame([("u", "a", 10), ("u", "b", 20), ("u", "c", DAY + 5), ("v", "a", 30)])
    picks = set()
    for seed in range(30):
        out = one_per_day(df, seed)
        assert len(out) == 3 and out.groupby("user").size().to_dict() == {"u": 2, "v": 1}
        assert out[out.user == "u"]["item"].iloc[-1] == "c"  # time order kept
        picks.add(out[out.user == "u"]["item"].iloc[0])
        assert out.equals(one_per_day(df, seed))
    assert picks == {"a", "b"}


def test_build_sequences_hand_checked():
    rows, titles = [], {}
    for u in range(6):  # six users who each review items i0..i5 on days 0..5
        rows += [(f"u{u}", f"i{i}", i * DAY + u) for i in range(6)]
    rows += [("u6", f"i{i}", i * DAY) for i in range(4)]  # only four items: fails 5-core
    rows += [(f"u{u}", "i9", 9 * DAY) for u in range(4)]  # only four users: fails 5-core
    rows += [("u0", "i7", 2 * DAY + 100)]  # an item without a title: dropped first
    titles = {f"i{i}": f"Title of item {i} with many more words than eight" for i in (0, 1, 2, 3, 4, 5, 9)}
    sequences, cut = build_sequences(frame(rows), titles, seed=0)
    assert sequences == {f"u{u}": [f"i{i}" for i in range(6)] for u in range(6)}
    assert cut == {f"i{i}": "Title of item %d with many more words" % i for i in range(6)}


def test_unique_item_bounds_and_repeats():
    df = frame([("u", "a", 0), ("u", "b", DAY), ("u", "a", 2 * DAY), ("w", "a", 0), ("w", "b", DAY),
                ("w", "c", 2 * DAY), ("w", "d", 3 * DAY)])
    titles = {x: x for x in "abcd"}
    sequences, _ = build_sequences(df, titles, k=1, min_items=2, max_items=3)
    assert sequences == {"u": ["a", "b", "a"]}  # w has 4 unique items > 3


def test_cut_title():
    assert cut_title("  one two   three four five six seven eight nine ten ") == "one two three four five six seven eight"


def test_gzip_and_plain_read_alike(tmp_path):
    records = [{"reviewerID": "u", "asin": "a", "unixReviewTime": 5, "overall": 5.0}]
    plain = read_reviews(write_jsonl(tmp_path / "r.json", records))
    gz = read_reviews(write_jsonl(tmp_path / "r.json.gz", records, gz=True))
    assert plain.equals(gz) and plain.values.tolist() == [["u", "a", 5]]


def test_malformed_and_truncated_raw_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 5}\n{"reviewerID": "u", "asin"\n')
    with pytest.raises(DataError, match=r"bad.json, line 2: malformed JSON"):
        read_reviews(bad)
    missing = write_jsonl(tmp_path / "m.json", [{"reviewerID": "u", "asin": "a"}])
    with pytest.raises(DataError, match="missing field 'unixReviewTime'"):
        read_reviews(missing)
    gz = write_jsonl(tmp_path / "r.json.gz", [{"reviewerID": "u", "asin": "a", "unixReviewTime": i} for i in range(2000)], gz=True)
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_reviews(gz)


def test_raw_files_to_a_domain_that_load_domain_reads(tmp_path):
    reviews = [{"reviewerID": f"u{u}", "asin": f"i{i}", "unixReviewTime": i * DAY} for u in range(5) for i in range(5)]
    meta = [{"asin": f"i{i}", "title": f"Thing &amp; {i}"} for i in range(5)]
    out = build_domain(write_jsonl(tmp_path / "r.json.gz", reviews, gz=True),
                       write_jsonl(tmp_path / "m.json", meta), tmp_path / "data" / "Tools")
    domain = load_domain("Tools", out.parent)
    assert len(domain.sequences) == 5
    assert [domain.titles[i] for i in domain.sequences[0]] == [f"Thing &amp; {i}" for i in range(5)]
