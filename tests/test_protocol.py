import numpy as np
import pytest

from xcross_lib.data.protocol import (
    CANDIDATE_SCHEMA,
    item_popularity,
    make_candidates,
    read_candidates,
    sample_candidates,
    split_users,
    subsample_users,
    write_parquet,
)
from xcross_lib.errors import DataError, ParameterError

from conftest import random_domain

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("n", [5, 7, 10, 11, 12, 13, 10962, 21342])
def test_split_is_3_1_1_within_one_user(n):
    split = split_users(range(n), seed=0)
    sizes = {k: len(v) for k, v in split.items()}
    assert sum(sizes.values()) == n
    for name, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        assert abs(sizes[name] - share * n) <= 1, (name, sizes)
    together = np.concatenate(list(split.values()))
    assert len(set(together.tolist())) == n  # disjoint, and every user placed


def test_split_is_seeded():
    a, b, c = split_users(range(100), 0), split_users(range(100), 0), split_users(range(100), 1)
    assert all((a[k] == b[k]).all() for k in a)
    assert any(set(a[k]) != set(c[k]) for k in a)


def test_subsample_fraction_and_seed():
    users = np.arange(1000, 2000)
    s = subsample_users(users, 0.4, seed=3)
    assert len(s) == 400 and set(s) <= set(users)
    assert (s == subsample_users(users, 0.4, seed=3)).all()
    assert set(s) != set(subsample_users(users, 0.4, seed=4))
    assert (subsample_users(users, 1.0, seed=3) == users).all()
    with pytest.raises(ParameterError):
        subsample_users(users, 1.5, seed=0)


def test_popularity_counts_training_users_only():
    sequences = {0: [1, 2, 2], 1: [2, 3], 2: [4, 4, 4]}
    assert item_popularity(sequences, [0, 1], n_items=5).tolist() == [0, 1, 3, 1, 0]


def test_candidates_exclude_the_sequence_and_hold_the_target():
    popularity = np.array([5, 0, 3, 1, 1, 2, 4, 1, 1, 1])
    seq = [0, 2, 6]  # target 6
    for seed in range(20):
        cands, t = sample_candidates(seq[-1], seq, popularity, np.random.default_rng(seed), n_candidates=6)
        assert cands[t] == 6 and len(cands) == 6 and len(set(cands)) == 6
        negatives = [c for k, c in enumerate(cands) if k != t]
        assert not set(negatives) & set(seq)
        assert 1 not in negatives  # popularity 0: never drawn


def test_negatives_follow_popularity():
    # items 1 and 2 have weights 1 and 9; one negative per draw
    popularity = np.array([1, 1, 9])
    rng = np.random.default_rng(0)
    draws = [sample_candidates(0, [0], popularity, rng, n_candidates=2) for _ in range(4000)]
    share_2 = np.mean([c[1 - t] == 2 for c, t in draws])
    assert abs(share_2 - 0.9) < 0.02
    targets_first = np.mean([t == 0 for _, t in draws])
    assert abs(targets_first - 0.5) < 0.03  # the target's position is random


def test_too_few_items_for_negatives_is_a_clear_error():
    with pytest.raises(DataError, match="negatives are needed"):
        sample_candidates(1, [0, 1], np.array([1, 1, 1, 1]), np.random.default_rng(0), n_candidates=30)


def test_candidate_files_are_byte_identical_for_a_seed(tmp_path):
    sequences, _ = random_domain(seed=0)
    split = split_users(sequences, seed=0)
    paths = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        frame = make_candidates(sequences, split, seed=seed, n_candidates=10, progress=False)
        paths.append(write_parquet(frame, tmp_path / f"{name}.parquet", CANDIDATE_SCHEMA))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c
    back = read_candidates(paths[0])
    assert len(back) == len(sequences)
    row = back.iloc[0]
    assert row["candidates"][row["target_index"]] == row["target"] == sequences[row["user"]][-1]
    assert row["history"] == sequences[row["user"]][:-1]


def test_a_users_candidates_do_not_depend_on_other_users():
    sequences, _ = random_domain(seed=1)
    split = split_users(sequences, seed=0)
    full = make_candidates(sequences, split, seed=0, n_candidates=10, progress=False)
    fewer = {**split, "test": split["test"][:3]}
    part = make_candidates(sequences, fewer, seed=0, n_candidates=10, progress=False)
    merged = part.merge(full, on="user", suffixes=("", "_full"))
    assert (merged["candidates"].map(tuple) == merged["candidates_full"].map(tuple)).all()


def test_split_deviation_by_hand():
    from xcross_lib.data.protocol import split_deviation

    assert split_deviation({"train": 6, "validation": 2, "test": 2}) == 0
    assert split_deviation({"train": 7, "validation": 2, "test": 2}) == pytest.approx(0.4)  # 7 vs 6.6


def test_prefix_examples_by_hand():
    from xcross_lib.data.protocol import prefix_examples

    sequences = {7: [0, 1, 2, 3, 4, 5], 8: [1, 2, 3, 4]}
    popularity = np.ones(20, dtype=np.int64)
    frame = prefix_examples(sequences, [7, 8], popularity, seed=0, min_history=4, n_candidates=5)
    # user 7: prefixes of 4 and 5 items predict items 4 and 5; user 8 has no prefix of 4 with a next item
    assert frame["user"].tolist() == [7, 7] and frame["target"].tolist() == [4, 5]
    assert frame["history"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3, 4]]
    for row in frame.itertuples():
        assert row.candidates[row.target_index] == row.target
        assert not (set(row.candidates) - {row.target}) & set(sequences[7])  # later items excluded too
