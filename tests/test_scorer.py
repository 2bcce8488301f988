"""The scorer on tiny models: loss by hand, what trains, save/load, resume, prompt ids."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.data.prompts import PromptBuilder
from xcross_lib.data.protocol import make_candidates, split_users
from xcross_lib.errors import ParameterError
from xcross_lib.models import Scorer, ScorerConfig, load_backbone, multiple_choice_loss
from xcross_lib.models.scorer import segment_cosine
from xcross_lib.models.source import load_source, save_source
from xcross_lib.training import TrainConfig, evaluate_scorer, score_candidates, train_scorer

from conftest import random_domain

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_task():
    sequences, titles = random_domain(seed=0, n_users=30, n_items=50)
    split = split_users(sequences, seed=0)
    frame = make_candidates(sequences, split, seed=0, n_items=50, n_candidates=6, progress=False)
    return sequences, titles, frame


def make_model(kind="tiny-bert", pooling="cls", seed=0):
    torch.manual_seed(seed)
    backbone = load_backbone(kind, seed=seed)
    return Scorer(backbone, ScorerConfig(pooling=pooling)), backbone


def test_loss_equals_hand_computed_cross_entropy(tiny_task):
    _, titles, frame = tiny_task
    model, backbone = make_model()
    model.eval()
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    rows = frame.head(2)
    batch = enc.batch(rows["history"].tolist(), rows["candidates"].tolist(), rows["target_index"].tolist())
    scores = model(**batch.model_inputs())
    assert scores.shape == (12,)
    loss = multiple_choice_loss(scores, 6, batch.target_index)
    s = scores.detach().view(2, 6).double().numpy()
    t = rows["target_index"].tolist()
    by_hand = np.mean([-s[b, t[b]] + math.log(np.exp(s[b]).sum()) for b in range(2)])
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-deberta"])
def test_training_changes_lora_and_head_only(tiny_task, tmp_path, kind):
    _, titles, frame = tiny_task
    model, backbone = make_model(kind)
    frozen_before = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    trainable_before = model.trainable_state()
    assert any("lora_A" in k for k in trainable_before) and any(k.startswith("head.") for k in trainable_before)
    assert not any("lora" in k for k in frozen_before)
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    train = frame[frame["split"] == "train"]
    train_scorer(model, enc, train, None, TrainConfig(learning_rate=1e-2, batch_size=4, bf16=False), tmp_path, progress=False)
    after = dict(model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in frozen_before.items())
    changed = [k for k, v in trainable_before.items() if not torch.equal(v, after[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)
    assert any(k.startswith("head.") for k in changed)


def test_save_and_load_give_identical_scores(tiny_task, tmp_path):
    _, titles, frame = tiny_task
    model, backbone = make_model(pooling="mean")
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for k, p in model.named_parameters():
            if "lora_B" in k:
                p.normal_(0, 0.5)
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    test = frame[frame["split"] == "test"]
    before = score_candidates(model, enc, test, bf16=False, progress=False)
    save_source(model, tmp_path / "Tools", {"data_fingerprint": "abc"})
    adapter_config = json.loads((tmp_path / "Tools" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny-bert"  # no machine path in shipped files
    assert not (tmp_path / "Tools" / "README.md").exists()
    loaded = load_source(tmp_path / "Tools")
    after = score_candidates(loaded, enc, test, bf16=False, progress=False)
    np.testing.assert_array_equal(before, after)
    with pytest.raises(ParameterError, match="no source model 'Nowhere'"):
        load_source("Nowhere")


def test_resumed_run_ends_with_the_same_weights(tiny_task, tmp_path):
    _, titles, frame = tiny_task
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "validation"]
    cfg = TrainConfig(learning_rate=5e-3, epochs=2, batch_size=2, grad_accumulation=2, train_candidates=4,
                      checkpoint_every=2, log_every=1, bf16=False)

    def run(out, stop=None):
        model, backbone = make_model()
        enc = PromptEncoder(backbone.tokenizer, titles, 64)
        return model, train_scorer(model, enc, train, val, cfg, out, progress=False, stop_after_steps=stop)

    whole, whole_result = run(tmp_path / "whole")
    _, partial = run(tmp_path / "cut", stop=3)  # 18 users / (2 x 2) = 5 steps an epoch: stops mid-epoch
    assert len(partial.curve) == 3
    resumed, resumed_result = run(tmp_path / "cut")
    a, b = whole.trainable_state(), resumed.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(whole_result.curve.drop(columns="examples_per_s"),
                                  resumed_result.curve.drop(columns="examples_per_s"))
    assert resumed_result.validation["hit@1"].tolist() == whole_result.validation["hit@1"].tolist()
    # the wall time is the training's, summed over both processes: a run that only reloads a finished
    # checkpoint reports the seconds that trained it, not the second it took to read them
    _, again = run(tmp_path / "cut")
    assert partial.wall_s < resumed_result.wall_s <= again.wall_s < resumed_result.wall_s + 5
    # a checkpoint written before training time was kept: the time is unknown, not the last process's
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    del ckpt["state"]["train_s"]
    torch.save(ckpt, tmp_path / "cut" / "checkpoint.pt")
    assert np.isnan(run(tmp_path / "cut")[1].wall_s)


def test_a_checkpoint_of_other_settings_is_refused(tiny_task, tmp_path):
    _, titles, frame = tiny_task
    train = frame[frame["split"] == "train"]
    model, backbone = make_model()
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    train_scorer(model, enc, train, None, TrainConfig(bf16=False), tmp_path, progress=False, stop_after_steps=1)
    with pytest.raises(ValueError, match="other settings"):
        train_scorer(model, enc, train, None, TrainConfig(bf16=False, learning_rate=1.0), tmp_path, progress=False)


def test_prompt_ids_equal_the_tokenizer_on_the_prompt_text(minilm_tokenizer):
    titles = {0: "Stanley 16 oz hammer", 1: "Tom &amp; Jerry tape measure, 25 ft", 2: "DEWALT 20V MAX drill kit",
              3: "Gorilla glue", 4: "Milwaukee M18 fuel hammer drill with two batteries and charger"}
    enc = PromptEncoder(minilm_tokenizer, titles, 32)
    text = PromptBuilder(minilm_tokenizer, 32)
    for history, cand in (([0, 1, 2], 3), ([0, 1, 2], 4), ([2], 4), ([0, 1, 2, 0, 1, 2], 3)):
        ids, types = enc.prompt(history, cand)
        p = text([titles[i] for i in history], titles[cand])
        ref = minilm_tokenizer(p.history, p.candidate)
        assert ids == ref["input_ids"] and types == ref["token_type_ids"] and len(ids) <= 32
    batch = enc.batch([[0, 1], [2]], [[3, 4], [4, 3]], [1, 0])
    assert batch.input_ids.shape[0] == 4 and batch.attention_mask.sum(1).tolist() == [
        len(enc.prompt([0, 1], 3)[0]), len(enc.prompt([0, 1], 4)[0]), len(enc.prompt([2], 4)[0]), len(enc.prompt([2], 3)[0])]


def test_segment_cosine_by_hand():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])  # (1, 4, 2); last token is padding
    mask = torch.tensor([[1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 1, 0]])
    # history mean (2, 0), candidate mean (0, 2): orthogonal
    assert segment_cosine(hidden, mask, types).item() == pytest.approx(0.0)
    types = torch.tensor([[0, 1, 1, 0]])  # history (1, 0); candidate mean (1.5, 1): cos = 1.5 / sqrt(3.25)
    assert segment_cosine(hidden, mask, types).item() == pytest.approx(1.5 / math.sqrt(3.25))


def test_evaluation_does_not_depend_on_batching(tiny_task):
    _, titles, frame = tiny_task
    model, backbone = make_model(pooling="mean")
    enc = PromptEncoder(backbone.tokenizer, titles, 64)
    a = score_candidates(model, enc, frame, batch_users=1, bf16=False, progress=False)
    b = score_candidates(model, enc, frame, batch_users=7, bf16=False, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-5)
    per_user = evaluate_scorer(model, enc, frame, bf16=False, progress=False)
    assert per_user["user"].tolist() == frame["user"].tolist()


def test_backbone_errors(monkeypatch, tmp_path):
    with pytest.raises(ParameterError, match="unknown backbone 'bert-large'"):
        load_backbone("bert-large")
    monkeypatch.setenv("XCROSS_DEBERTA_DIR", str(tmp_path / "missing"))
    with pytest.raises(ParameterError, match="not a directory"):
        load_backbone("deberta-v3-base")
    model, backbone = make_model()
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        Scorer(backbone)


def test_untrained_separate_encoding_is_the_text_similarity_row(tiny_task):
    """Two towers with LoRA B = 0 and the residual projection at zero: scale (2) x cosine of the
    backbone's mean-pooled embeddings, i.e. the text-similarity reference row."""
    from xcross_lib.baselines import text_similarity_scores

    _, titles, frame = tiny_task
    torch.manual_seed(0)
    backbone = load_backbone("tiny-bert")
    reference_model = load_backbone("tiny-bert").model.eval()  # same seed, same weights, no adapter
    model = Scorer(backbone, ScorerConfig(encoding="separate"))
    enc = PromptEncoder(backbone.tokenizer, titles, 64, encoding="separate")
    test = frame[frame["split"] == "test"]
    scores = score_candidates(model, enc, test, bf16=False, progress=False)
    reference = text_similarity_scores(reference_model, enc, test, progress=False)
    np.testing.assert_allclose(scores, 2.0 * reference, atol=1e-5)


def test_train_config_reads_numbers_written_as_strings_and_refuses_nonsense():
    assert TrainConfig(learning_rate="2e-4").learning_rate == 2e-4
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        TrainConfig(learning_rate="fast")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="bf16 must be"):
        TrainConfig(bf16="yes")


def test_two_tower_scoring_from_cached_embeddings_equals_scoring_each_list(tiny_task):
    """Each distinct candidate encoded once gives the scores of encoding every list on its own,
    for a source model and for X-Cross over two-tower sources (adapters and head made non-trivial)."""
    from xcross_lib.models.xcross import XCross, XCrossConfig

    _, titles, frame = tiny_task
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig(encoding="separate"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k or "head.dense" in k:
                    p.normal_(0, 0.2)
        models.append(model.eval())
    xcross = XCross(load_backbone("tiny-bert", seed=0), models, XCrossConfig())
    with torch.no_grad():
        for integrator in xcross.integrators.values():
            integrator.scaling.weight.normal_(0, 0.1)
    enc = PromptEncoder(models[0].tokenizer, titles, 64, encoding="separate")
    for model in (models[0], xcross):
        cached = score_candidates(model, enc, frame, bf16=False, progress=False)
        per_list = score_candidates(model, enc, frame, batch_users=3, bf16=False, progress=False, cache_items=False)
        assert np.abs(per_list).max() > 0.1
        np.testing.assert_allclose(cached, per_list, atol=1e-5)


def test_a_resume_between_logged_points_keeps_the_learning_curve(tiny_task, tmp_path):
    """The loss window of the next curve point survives a checkpoint: cut at step 4 of a curve logged
    every 3 steps, the resumed run logs the same losses as the uninterrupted one (issue 16, item 6)."""
    _, titles, frame = tiny_task
    train = frame[frame["split"] == "train"]
    cfg = TrainConfig(learning_rate=5e-3, epochs=2, batch_size=2, train_candidates=4, checkpoint_every=100,
                      log_every=3, bf16=False)

    def run(out, stop=None):
        model, backbone = make_model()
        enc = PromptEncoder(backbone.tokenizer, titles, 64)
        return train_scorer(model, enc, train, None, cfg, out, progress=False, stop_after_steps=stop)

    whole = run(tmp_path / "whole")
    run(tmp_path / "cut", stop=4)  # step 4: one step into the window that closes at step 6
    resumed = run(tmp_path / "cut")
    assert len(whole.curve) > 3
    pd.testing.assert_frame_equal(whole.curve[["step", "epoch", "loss", "lr"]], resumed.curve[["step", "epoch", "loss", "lr"]])
    assert (resumed.curve["examples_per_s"] > 0).all()


def test_checkpoints_come_by_time_as_well_as_by_steps(tiny_task, tmp_path, monkeypatch):
    from xcross_lib.training import trainer

    _, titles, frame = tiny_task
    train = frame[frame["split"] == "train"]
    written = []
    save = trainer._save_atomic
    monkeypatch.setattr(trainer, "_save_atomic", lambda obj, path: (written.append(Path(path).name), save(obj, path)))

    def checkpoints(every_s):
        written.clear()
        model, backbone = make_model()
        enc = PromptEncoder(backbone.tokenizer, titles, 64)
        cfg = TrainConfig(batch_size=2, train_candidates=4, checkpoint_every=10_000, checkpoint_every_s=every_s, bf16=False)
        train_scorer(model, enc, train, None, cfg, tmp_path / str(every_s), progress=False)
        return written.count("checkpoint.pt")

    steps = -(-len(train) // 2)
    assert checkpoints(None) == 2  # the start and the epoch end
    assert checkpoints(0.0) == steps + 2  # and every step (each is overdue)
    assert "checkpoint_every_s" in trainer.NON_DEFINING  # how often is not what the run computes
