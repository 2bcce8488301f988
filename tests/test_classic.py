"""The classic sequential recommenders (RecBole's SASRec, BERT4Rec, FDSA, S3-Rec) on a tiny made data
set, and the full-ranking metric against hand computations."""

import numpy as np
import pandas as pd
import pytest

from xcross_lib.metrics import full_ranking_per_user, full_ranking_ranks
from xcross_lib.models.classic import (MODELS, ItemCatalogue, build_model, candidate_scores, full_scores,
                                       model_config, recbole_defaults, title_words)
from xcross_lib.training.classic import ClassicConfig, prefix_examples, train_classic

pytestmark = pytest.mark.unit

N_ITEMS = 24


def _planted(n_users: int = 240, seed: int = 0) -> dict[int, list[int]]:
    """Sequences that walk the items in order: item i is always followed by item i + 1 (mod N_ITEMS)."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(5, 9))
        out[u] = [(start + k) % N_ITEMS for k in range(length)]
    return out


def _catalogue(name: str, overrides=None) -> ItemCatalogue:
    # titles share a word with the next item, so title words carry the pattern too
    titles = {i: f"part{i} part{(i + 1) % N_ITEMS} kit" for i in range(N_ITEMS)}
    table, vocabulary = title_words(titles, N_ITEMS, max_share=1.0)
    return ItemCatalogue(N_ITEMS, table, len(vocabulary), model_config(name, overrides))


def _validation(sequences: dict, users) -> pd.DataFrame:
    rows = []
    for u in users:
        seq = sequences[u]
        target = seq[-1]
        cands = [target] + [i for i in range(N_ITEMS) if i not in seq][:13]  # most other items: not too easy
        rows.append({"user": u, "history": seq[:-1], "candidates": cands, "target_index": 0})
    return pd.DataFrame(rows)


def test_title_words_keep_words_shared_by_two_titles():
    table, vocabulary = title_words({0: "Red Drill &amp; Bit", 1: "red saw", 2: "Blue bit"}, 4, max_share=1.0)
    assert vocabulary == ["bit", "red"]  # "drill", "saw", "blue" occur once; "&amp;" is unescaped away
    assert table[0].tolist()[:3] == [2, 1, 0]  # red, bit (title order), then padding
    assert table[3].tolist() == [0] * 8  # an item without a title has no attribute


def test_title_words_drop_words_of_too_many_titles_and_keep_the_most_frequent():
    titles = {i: "drill for wood" if i < 6 else "saw for metal" if i < 9 else "glue for wood" for i in range(20)}
    # counts: for 20, wood 17, glue 11, drill 6, saw 3, metal 3
    _, vocabulary = title_words(titles, 20, max_share=0.5)
    assert vocabulary == ["drill", "metal", "saw"]  # at most 10 of 20 titles
    _, top = title_words(titles, 20, max_share=0.9, max_vocabulary=2)
    assert top == ["glue", "wood"]  # "for" (20 > 18) dropped, then the two most frequent


def test_defaults_are_recboles_own():
    d = recbole_defaults("SASRec")
    assert (d["hidden_size"], d["n_layers"], d["learning_rate"], d["stopping_step"]) == (64, 2, 0.001, 10)
    assert recbole_defaults("BERT4Rec")["mask_ratio"] == 0.2
    config = model_config("BERT4Rec", {"hidden_size": 32})
    assert config["hidden_size"] == 32 and config["not a key"] is None and hasattr(config, "ft_ratio")


def test_importing_recbole_leaves_anomaly_detection_off():
    import torch

    from xcross_lib.models.classic import model_class

    model_class("SASRec")  # imports recbole.model.sequential_recommender, whose sine.py turns it on
    assert not torch.is_anomaly_enabled()


def test_prefix_examples_are_every_prefix():
    histories, targets = prefix_examples({7: [1, 2, 3]}, [7])
    assert histories == [[1], [1, 2]] and targets == [2, 3]


@pytest.mark.parametrize("name", MODELS)
def test_each_model_learns_a_planted_pattern(name):
    sequences = _planted(160)
    train_users, val_users = list(range(120)), list(range(120, 160))
    small = {"hidden_size": 16, "inner_size": 32, "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1}
    config = ClassicConfig(name, learning_rate=1e-2, train_batch_size=256, max_epochs=40, stopping_step=40,
                           time_budget_s=300, pretrain_epochs=1, overrides=small)
    catalogue = _catalogue(name, small)
    model, curve, summary = train_classic(config, catalogue, sequences, train_users,
                                          _validation(sequences, val_users), progress=False)
    assert summary["pretrain_epochs_run"] == (1 if name == "S3Rec" else 0)
    losses = curve.loc[(curve["stage"] == "train") & (curve["epoch"] > 0), "train_loss"].to_numpy()
    assert losses[-1] < 0.75 * losses[0], (name, losses[0], losses[-1])
    # the planted next item ranks first over all items outside the history, for most histories
    histories = [[3, 4, 5], [10, 11], [20, 21, 22, 23], [0, 1, 2, 3, 4, 5], [15, 16, 17, 18, 19]]
    scores = full_scores(model, histories)
    assert scores.shape == (5, N_ITEMS)
    ranks = full_ranking_ranks(scores, [6, 12, 0, 6, 20], histories)
    assert (ranks == 1).sum() >= 4, (name, ranks)
    assert summary["validation_mrr"] > 0.8 and summary["best_epoch"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_candidate_scores_equal_full_scores_restricted(name):
    """Two paths of RecBole's models, pairwise `predict` and `full_sort_predict`, give the same
    scores on a stored candidate list (and our ids map to the same RecBole ids in both)."""
    catalogue = _catalogue(name, {"hidden_size": 16, "inner_size": 32})
    model = build_model(name, catalogue, seed=3)
    model.train_stage = "finetune"
    histories = [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12], [23, 0]]
    candidates = [[4, 0, 9], [6, 5, 23], [13, 1, 2], [1, 22, 3]]
    full = full_scores(model, histories)
    pairwise = candidate_scores(model, histories, candidates)
    np.testing.assert_allclose(pairwise, np.take_along_axis(full, np.array(candidates), axis=1), rtol=1e-5, atol=1e-5)


def test_full_ranking_against_a_hand_computation():
    scores = np.array([
        [0.9, 0.5, 0.5, 0.1, 0.7],   # target 1 (0.5); history [0, 4] left out; item 2 ties: rank 2
        [0.2, 0.2, 0.9, 0.9, 0.0],   # target 3 (0.9); history [3, 2]: 3 is the target and stays, 2 left out: rank 1
        [0.3, 0.3, 0.3, 0.3, 0.3],   # all tie, no history: the target ranks last of 5
    ])
    ranks = full_ranking_ranks(scores, [1, 3, 0], [[0, 4], [3, 2], []])
    assert ranks.tolist() == [2, 1, 5]
    per_user = full_ranking_per_user(scores, [1, 3, 0], [[0, 4], [3, 2], []], users=[10, 11, 12])
    assert per_user["mrr"].tolist() == [0.5, 1.0, 0.2]
    assert per_user["ndcg@10"].round(6).tolist() == [round(1 / np.log2(3), 6), 1.0, round(1 / np.log2(6), 6)]
    assert per_user["user"].tolist() == [10, 11, 12] and per_user["hit@1"].tolist() == [0.0, 1.0, 0.0]


def test_two_tower_full_scores_restricted_equal_the_candidate_scores():
    """A source model (two towers) ranks every item with its own head: restricted to a stored
    candidate list, the same scores as the candidate path that every other table uses."""
    import torch

    from xcross_lib.data.encoding import PromptEncoder
    from xcross_lib.models import Scorer, ScorerConfig, load_backbone
    from xcross_lib.training.evaluate import score_candidates, two_tower_full_scores

    model = Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig(encoding="separate", pooling="mean")).eval()
    with torch.no_grad():  # a head that is not the identity, so the test sees the head at work
        model.head.dense.weight.normal_(0, 0.2)
    titles = {i: f"item {i} part {i % 3}" for i in range(12)}
    encoder = PromptEncoder(model.tokenizer, titles, 64, "separate")
    frame = pd.DataFrame({"history": [[0, 1, 2], [5], [7, 8]], "candidates": [[3, 4, 11], [0, 6, 9], [1, 2, 10]],
                          "target_index": [0, 1, 2]})
    full = two_tower_full_scores(model, encoder, frame["history"].tolist(), list(range(12)), batch_users=2, batch_items=5)
    sampled = score_candidates(model, encoder, frame, progress=False)
    np.testing.assert_allclose(np.take_along_axis(full, np.stack(frame["candidates"].to_numpy()), axis=1), sampled,
                               rtol=1e-5, atol=1e-5)


def test_order_changes_and_place_plot_follow_the_two_metrics():
    import matplotlib

    matplotlib.use("Agg")
    from xcross_lib.plots import plot_place_changes
    from xcross_lib.report import order_changes

    full = pd.DataFrame({"model": ["A", "B", "C"], "sampled mrr": [20.0, 15.0, 10.0], "full mrr": [1.0, 0.2, 0.5],
                         "spearman (orders by mrr)": 0.5, "kendall (orders by mrr)": 1 / 3, "target": "T",
                         "results": "outputs"})
    (row,) = order_changes(full).to_dict("records")
    assert row["order by sampled MRR"] == "A > B > C" and row["order by full-ranking MRR"] == "A > C > B"
    assert row["models"] == 3 and row["spearman"] == 0.5
    ax = plot_place_changes(full)
    places = {tuple(line.get_ydata()) for line in ax.get_lines()}
    assert places == {(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)}  # B falls from 2nd to 3rd, C rises


def test_an_epoch_starts_only_when_it_would_end_within_a_quarter_past_the_budget():
    from xcross_lib.training.classic import next_epoch_fits

    assert next_epoch_fits(400.0, 110.0, 480.0)  # ends about 510 s: within 600
    assert next_epoch_fits(474.0, 118.0, 480.0)  # 592 s (Sports' BERT4Rec's last epoch)
    assert not next_epoch_fits(470.0, 150.0, 480.0)  # 620 s: past the 10-minute bar, not started
    assert not next_epoch_fits(481.0, 1.0, 480.0)  # the budget is spent
    assert next_epoch_fits(100.0, 400.0, 480.0) and not next_epoch_fits(100.0, 600.0, 480.0, overrun=0.25)


def test_an_earlier_search_table_keeps_only_its_missing_rows_and_only_on_the_same_data():
    from xcross_lib.single_domain import with_earlier_search_rows

    def table(folders, mrrs, commit):
        return pd.DataFrame({"model": [f.split("-")[0] for f in folders], "folder": folders,
                             "validation_mrr": mrrs, "overrides": "", "commit": commit})

    now = table(["SASRec-a", "S3Rec-b"], [18.0, 17.0], "new").assign(**{"best for model (validation)": True})
    earlier = table(["SASRec-a", "SASRec-c"], [18.0, 18.5], "old")
    earlier["overrides"] = np.nan  # read back from a CSV
    both = with_earlier_search_rows(now, earlier).set_index("folder")
    assert both.index.tolist() == ["SASRec-a", "S3Rec-b", "SASRec-c"]
    assert both["commit"].tolist() == ["new", "new", "old"] and both.loc["SASRec-c", "overrides"] == ""
    assert both["best for model (validation)"].tolist() == [False, True, True]  # marked again over the union
    other_data = table(["SASRec-x", "SASRec-y"], [30.0, 31.0], "old")  # no run in common: made on other data
    assert with_earlier_search_rows(now, other_data).equals(now)
    assert with_earlier_search_rows(now, None).equals(now)
