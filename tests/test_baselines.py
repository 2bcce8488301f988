import numpy as np
import pandas as pd
import pytest
import torch

from xcross_lib.baselines import popularity_scores, random_scores, text_similarity_scores
from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.models import load_backbone

pytestmark = pytest.mark.unit

FRAME = pd.DataFrame({"user": [0, 1], "history": [[0, 1], [2]], "candidates": [[2, 3, 4], [0, 4, 3]],
                      "target_index": [0, 2]})


def test_popularity_scores_are_training_counts():
    sequences = {0: [0, 1, 2], 1: [2, 3], 2: [4, 4, 0]}
    scores = popularity_scores(FRAME, sequences, train_users=[0, 1], n_items=5)
    # counts over users 0 and 1: item0 1, item1 1, item2 2, item3 1, item4 0
    assert scores.tolist() == [[2, 1, 0], [1, 0, 1]]


def test_random_scores_are_seeded():
    assert np.array_equal(random_scores(FRAME, 3), random_scores(FRAME, 3))
    assert not np.array_equal(random_scores(FRAME, 3), random_scores(FRAME, 4))


def test_text_similarity_is_the_cosine_of_separately_encoded_mean_embeddings():
    backbone = load_backbone("tiny-bert")
    model = backbone.model.eval()
    titles = {0: "cordless drill", 1: "saw blade", 2: "wood glue", 3: "tape measure", 4: "led bulb"}
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    scores = text_similarity_scores(model, enc, FRAME, progress=False)

    def embed(text):
        t = backbone.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            return model(**t).last_hidden_state[0].mean(0)

    history = embed("cordless drill; saw blade")
    for c, item in enumerate([2, 3, 4]):
        expected = torch.nn.functional.cosine_similarity(history, embed(titles[item]), dim=0).item()
        assert scores[0, c] == pytest.approx(expected, abs=1e-5)
