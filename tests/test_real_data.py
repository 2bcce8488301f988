"""The shared data (skipped where it is absent): counts equal SOURCE.md, the protocol holds."""

import warnings

import numpy as np
import pytest

from xcross_lib.data import DOMAINS, load_domain, prepare_protocol
from xcross_lib.data.download import verify
from xcross_lib.data.summary import compare_counts, source_counts, summary_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def domains(real_data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [load_domain(d, real_data_dir) for d in DOMAINS]


def test_checksums_of_the_shared_files(real_data_dir):
    result = verify(real_data_dir)
    assert len(result) == 20 and all(result.values())


def test_counts_equal_source_md(domains, real_data_dir):
    reference = source_counts(real_data_dir)
    assert reference["domain"].tolist() == list(DOMAINS)
    check = compare_counts(summary_table(domains), reference)
    assert check["matches"].all(), check


def test_sports_has_three_untitled_items(domains):
    counts = {d.name: len(d.untitled) for d in domains}
    assert counts == {"Tools": 0, "Toys": 0, "Sports": 3, "Electronics": 0}


def test_tools_protocol_on_real_data(domains, tmp_path):
    tools = domains[0]
    files = prepare_protocol(tools, tmp_path, seed=0, progress=False)
    cands = files.candidates()
    sizes = files.info["users"]
    assert abs(sizes["train"] - 0.6 * 10962) <= 1 and abs(sizes["test"] - 0.2 * 10962) <= 1
    assert len(cands) == 10962
    for row in cands.sample(300, random_state=0).itertuples():
        seq = tools.sequences[row.user]
        assert row.candidates[row.target_index] == seq[-1] and len(set(row.candidates)) == 30
        negatives = set(row.candidates) - {seq[-1]}
        assert not negatives & set(seq)
    # negatives lean to popular items: their mean training popularity exceeds the items' mean
    train_users = cands.loc[cands["split"] == "train", "user"]
    counts = np.bincount(np.concatenate([tools.sequences[u] for u in train_users]), minlength=5820)
    neg = np.concatenate([[c for k, c in enumerate(r.candidates) if k != r.target_index] for r in cands.itertuples()])
    assert counts[neg].mean() > 2 * counts.mean()
    # reused on the second call, rewritten identically with overwrite
    before = files.candidates_path.read_bytes()
    again = prepare_protocol(tools, tmp_path, seed=0, overwrite=True, progress=False)
    assert again.candidates_path.read_bytes() == before
    other = prepare_protocol(tools, tmp_path, seed=1, progress=False)
    assert other.candidates_path.read_bytes() != before
