"""The target-side training set-up: frozen parts without dropout, parameter groups and a frozen head,
the integrator's parametrisations, selection on validation (the untrained start included),
distinct candidate titles encoded once, and runs that know their settings."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.data.protocol import make_candidates, split_users
from xcross_lib.errors import RunMismatchError
from xcross_lib.models import Scorer, ScorerConfig, load_backbone
from xcross_lib.models.mixtures import AdapterMixture, head_only
from xcross_lib.models.xcross import Integrator, XCross, XCrossConfig
from xcross_lib.provenance import claim_run_folder
from xcross_lib.training import TrainConfig, evaluate_scorer, train_scorer
from xcross_lib.training.trainer import parameter_groups

from conftest import random_domain

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def task():
    sequences, titles = random_domain(seed=3, n_users=40, n_items=50)
    split = split_users(sequences, seed=0)
    frame = make_candidates(sequences, split, seed=0, n_items=50, n_candidates=6, progress=False)
    return titles, frame


def two_tower_sources(n=2, kind="tiny-bert"):
    """n two-tower source scorers with different, non-trivial adapters and heads."""
    out = []
    for s in range(n):
        torch.manual_seed(200 + s)
        model = Scorer(load_backbone(kind, seed=0), ScorerConfig(encoding="separate"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k or "head.dense" in k:
                    p.normal_(0, 0.3)
        out.append(model.eval())
    return out


def xcross(config=None, kind="tiny-bert"):
    torch.manual_seed(0)
    model = XCross(load_backbone(kind, seed=0), two_tower_sources(2, kind), config or XCrossConfig())
    with torch.no_grad():  # integrators away from zero, so that the streams really mix
        for p in model.integrators.parameters():
            p.normal_(0, 0.02)
    return model


def batch_of(model, titles, frame, users=4, distinct=False):
    enc = PromptEncoder(model.tokenizer, titles, 48, "separate")
    rows = frame.head(users)
    return enc.batch(rows["history"].tolist(), rows["candidates"].tolist(), rows["target_index"].tolist(),
                     distinct_candidates=distinct)


# -- 1. frozen parts run as they were trained ----------------------------------------------------

@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-deberta"])
def test_frozen_streams_give_the_same_output_on_two_passes_in_training_mode(task, kind):
    titles, frame = task
    model = xcross(kind=kind).train()
    assert model.encoder.config.hidden_dropout_prob > 0  # the backbone has dropout to switch off
    b = batch_of(model, titles, frame)
    first = model.stream_states(b.input_ids, b.attention_mask)
    second = model.stream_states(b.input_ids, b.attention_mask)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not model.encoder.training and model.integrators.training and model.head.training


def test_frozen_parts_of_the_mixtures_and_of_pooler_scorer_run_without_dropout(task):
    titles, frame = task
    srcs = two_tower_sources(2)
    mixture = AdapterMixture(load_backbone("tiny-bert", seed=0), srcs, "meteora").train()
    pooler_scorer = head_only(two_tower_sources(1)[0]).train()
    for model in (mixture, pooler_scorer):
        b = batch_of(model, titles, frame)
        passes = [model.encoder(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
                  for _ in range(2)]
        torch.testing.assert_close(passes[0], passes[1], rtol=0, atol=0)
        assert model.head.training  # the trainable head still trains with its dropout


def test_a_source_lora_in_training_keeps_its_dropout(task):
    titles, frame = task
    model = Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig(encoding="separate")).train()
    b = batch_of(model, titles, frame)
    passes = [model.encoder(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state for _ in range(2)]
    assert not torch.equal(passes[0], passes[1])  # its adapter trains: the model trains as before


# -- 2. parameter groups, a frozen head ----------------------------------------------------------

def test_parameter_groups_give_the_head_its_own_learning_rate():
    model = xcross()
    groups = parameter_groups(model, TrainConfig(learning_rate=1e-3, head_learning_rate=2e-4))
    by_name = {g["name"]: g for g in groups}
    assert by_name["integration"]["lr"] == 1e-3 and by_name["head"]["lr"] == 2e-4
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in by_name["head"]["params"]} == head_ids
    rest = {id(p) for p in by_name["integration"]["params"]}
    assert rest == {id(p) for p in model.integrators.parameters()} | {id(model.stream_weights)}
    same = parameter_groups(xcross(), TrainConfig(learning_rate=1e-3))
    assert [g["lr"] for g in same] == [1e-3, 1e-3]


def test_a_frozen_head_stays_as_it_was_while_the_integrators_learn(task, tmp_path):
    titles, frame = task
    model = xcross()
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    w_before = [p.detach().clone() for p in model.integrators.parameters()]
    enc = PromptEncoder(model.tokenizer, titles, 48, "separate")
    train = frame[frame["split"] == "train"]
    config = TrainConfig(learning_rate=1e-2, batch_size=4, train_head=False, validate_at_start=False, bf16=False)
    train_scorer(model, enc, train, None, config, tmp_path, progress=False)
    for k, v in model.head.state_dict().items():
        torch.testing.assert_close(v, head_before[k], rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(w_before, model.integrators.parameters()))
    model.train()
    assert not model.head.training  # frozen: evaluation mode, no dropout


def test_nothing_to_train_is_an_error():
    model = head_only(two_tower_sources(1)[0])
    with pytest.raises(ValueError, match="nothing to train"):
        parameter_groups(model, TrainConfig(train_head=False))


# -- the integrator's parametrisations ---------------------------------------------------------------

@pytest.mark.parametrize("parametrisation", ["paper", "fan_in", "normalised"])
def test_integrator_parametrisations_by_hand(parametrisation):
    n, d = 2, 3
    torch.manual_seed(0)
    integrator = Integrator(n, d, parametrisation)
    h = torch.randn(n, 1, 2, d)  # (n, B, T, d)
    with torch.no_grad():
        integrator.scaling.weight.normal_()
    W = integrator.scaling.weight.detach().double()  # (2n(n-1), n d)
    alpha, beta = integrator.factors(h)
    for t in range(2):
        c = torch.cat([h[0, 0, t], h[1, 0, t]]).double()  # [h_1; h_2] of token t
        if parametrisation == "normalised":
            c = c / torch.sqrt((c**2).mean() + 1e-6)
        z = W @ c
        z = z / {"paper": 1.0, "fan_in": (n * d) ** 0.5, "normalised": n * d}[parametrisation]
        # pairs (0, 1), (1, 0): alpha in z[0:2], beta in z[2:4]
        torch.testing.assert_close(alpha[:, 0, 0, t].double(), z[:2], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(beta[:, 0, 0, t].double(), z[2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parametrisation", ["fan_in", "normalised"])
def test_every_parametrisation_starts_as_the_average_of_the_streams(task, parametrisation):
    titles, frame = task
    torch.manual_seed(0)
    srcs = two_tower_sources(2)
    paper = XCross(load_backbone("tiny-bert", seed=0), srcs).eval()
    other = XCross(load_backbone("tiny-bert", seed=0), srcs, XCrossConfig(parametrisation=parametrisation)).eval()
    b = batch_of(paper, titles, frame)
    torch.testing.assert_close(other.encode(b.input_ids, b.attention_mask), paper.encode(b.input_ids, b.attention_mask),
                               rtol=0, atol=0)


def test_normalised_factors_move_by_about_the_step_size():
    """One sign step of size lr on every element of W moves a factor by at most lr (normalised),
    by up to lr x sum|c| (paper)."""
    n, d, lr = 2, 384, 1e-3
    torch.manual_seed(0)
    h = 3 * torch.randn(n, 1, 5, d)
    moved = {}
    for kind in ("paper", "normalised"):
        integrator = Integrator(n, d, kind)
        with torch.no_grad():
            integrator.scaling.weight.fill_(lr)  # the first Adam step from zero with every gradient sign +
        alpha, _ = integrator.factors(h)
        moved[kind] = alpha.abs().max().item()
    assert moved["normalised"] <= lr * 1.0001
    assert moved["paper"] > 100 * lr


# -- 3. selection on validation, the untrained start included ------------------------------------

def test_validation_points_and_the_kept_state(task, tmp_path):
    titles, frame = task
    model = xcross()
    enc = PromptEncoder(model.tokenizer, titles, 48, "separate")
    train = frame[frame["split"] == "train"]
    val = frame[frame["split"] == "validation"]
    untrained = evaluate_scorer(model, enc, val, progress=False)
    config = TrainConfig(learning_rate=3e-2, batch_size=2, epochs=2, validate_every=3, bf16=False)
    result = train_scorer(model, enc, train, val, config, tmp_path, progress=False)
    v = result.validation
    steps_per_epoch = int(np.ceil(len(train) / 2))
    assert v["step"].iloc[0] == 0  # the untrained start is a candidate
    assert v["mrr"].iloc[0] == pytest.approx(untrained["mrr"].mean() * 100)
    expected = sorted({0, *range(3, 2 * steps_per_epoch + 1, 3), steps_per_epoch, 2 * steps_per_epoch})
    assert v["step"].tolist() == expected
    best = v.loc[v["mrr"].idxmax()]  # the first of equal maxima
    assert result.best_step == best["step"]
    kept = evaluate_scorer(model, enc, val, progress=False)
    assert kept["mrr"].mean() * 100 == pytest.approx(best["mrr"], abs=1e-9)


def test_auto_precision_is_float32_on_a_cpu_with_bf16_kernels(task, made_target, tmp_path, monkeypatch):
    """bf16="auto" is float32 on every CPU: a run's definition says "auto" whichever machine a session
    draws, so on one with AVX-512 BF16 it must train and score exactly as on one without."""
    from xcross_lib import experiments
    from xcross_lib.training import trainer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert trainer.cpu_has_bf16() and not trainer.bf16_available(torch.device("cpu"))
    titles, frame = task
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "validation"]
    runs = {}
    for bf16 in ("auto", False):
        model = xcross()
        enc = PromptEncoder(model.tokenizer, titles, 48, "separate")
        config = TrainConfig(learning_rate=3e-2, batch_size=4, epochs=1, validate_every=3, bf16=bf16)
        runs[bf16] = trainer.train_scorer(model, enc, train, val, config, tmp_path / str(bf16), progress=False)
    assert runs["auto"].bf16 is False
    assert runs["auto"].validation.equals(runs[False].validation)  # float32 both: the same numbers
    scored = []  # the source rows of Tables 2-4 (evaluate_source) in float32 too
    monkeypatch.setattr(experiments, "evaluate_scorer", lambda *a, **k: scored.append(k["bf16"]))
    experiments.evaluate_source(Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig()), made_target,
                                made_target.frames["test"], 48)
    assert scored == [False]
    # a run where CUDA is (bf16 there under "auto") is never the CPU run of the same settings
    frames = made_target.frames
    on_cpu = experiments.run_definition("X-Cross", made_target, TrainConfig(), frames["train"], frames["validation"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = experiments.run_definition("X-Cross", made_target, TrainConfig(), frames["train"], frames["validation"])
    assert "device" not in on_cpu and on_gpu == {**on_cpu, "device": "cuda"}


def test_the_untrained_start_is_kept_when_training_only_hurts(task, tmp_path, monkeypatch):
    """Validation that falls after the start (an evaluator scripted to do so): the start is kept."""
    from xcross_lib.training import trainer

    titles, frame = task
    model = xcross()
    start = model.trainable_state()
    enc = PromptEncoder(model.tokenizer, titles, 48, "separate")
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "validation"]
    calls = []

    def falling(model, encoder, frame, **kwargs):  # MRR 0.5, then 0.4, 0.3, ...
        calls.append(1)
        mrr = 0.6 - 0.1 * len(calls)
        return pd.DataFrame({"user": frame["user"], "rank": 2, "hit@1": 0.0, "hit@3": 1.0, "hit@10": 1.0,
                             "mrr": mrr, "ndcg@10": 0.5})

    monkeypatch.setattr(trainer, "evaluate_scorer", falling)
    config = TrainConfig(learning_rate=5e-2, batch_size=2, epochs=2, validate_every=4, bf16=False)
    result = trainer.train_scorer(model, enc, train, val, config, tmp_path, progress=False)
    assert len(result.validation) == len(calls) > 3 and result.validation["mrr"].is_monotonic_decreasing
    assert result.best_step == 0 and result.best_metric == pytest.approx(50.0)
    for k, v in model.trainable_state().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0)
    trained = xcross()
    trained.load_trainable_state(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"])
    assert any(not torch.equal(v, start[k]) for k, v in trained.trainable_state().items())  # it did train


# -- speed: distinct candidate titles once, the same scores --------------------------------------------

@pytest.mark.parametrize("which", ["xcross", "lora"])
def test_distinct_candidates_give_the_same_scores_and_gradients(task, which):
    titles, frame = task
    model = xcross() if which == "xcross" else two_tower_sources(1)[0]
    model.eval()  # no dropout masks: the comparison is of arithmetic
    plain = batch_of(model, titles, frame, users=6)
    distinct = batch_of(model, titles, frame, users=6, distinct=True)
    assert distinct.input_ids.shape[0] < plain.input_ids.shape[0]  # the lists share titles
    assert distinct.candidate_index.shape == (plain.input_ids.shape[0],)
    grads = []
    for b in (plain, distinct):
        model.zero_grad()
        scores = model(**b.model_inputs())
        scores.square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        grads[-1]["scores"] = scores.detach()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-5)


# -- sizes -------------------------------------------------------------------------------------------

def test_the_three_parameter_counts_by_hand():
    from xcross_lib.experiments import parameter_counts

    d, n, layers = 32, 2, 3  # tiny-bert
    model = xcross()
    counts = parameter_counts(model)
    per_layer = n * d * 2 * n * (n - 1)  # W: (n d) x 2n(n-1)
    head = d * d + d + 1  # two towers: dense and the cosine scale
    assert counts["per_layer"] == per_layer == 256
    assert counts["without_head"] == layers * per_layer + n
    assert counts["with_head"] == layers * per_layer + n + head
    assert counts["trainable"] == counts["with_head"]
    top = parameter_counts(xcross(XCrossConfig(top_k_layers=1)))
    assert top["per_layer"] == per_layer and top["without_head"] == per_layer + n
    lora = parameter_counts(two_tower_sources(1)[0].train())
    r = 16
    assert lora["per_layer"] == 2 * (r * d + d * r)  # query and value, A and B
    assert lora["with_head"] == lora["without_head"] + head
    assert parameter_counts(head_only(two_tower_sources(1)[0]))["without_head"] == 0


# -- 5. runs that know their settings ----------------------------------------------------------------

def test_a_folder_made_with_other_settings_is_refused(tmp_path):
    definition = {"xcross": {"lambda1": 1.0, "lambda2": 1.0}, "train": {"learning_rate": 1e-3}}
    digest = claim_run_folder(tmp_path, definition)
    assert claim_run_folder(tmp_path, json.loads(json.dumps(definition))) == digest  # the same run: resumed
    other = {"xcross": {"lambda1": 0.5, "lambda2": 1.0}, "train": {"learning_rate": 1e-3}}
    with pytest.raises(RunMismatchError, match=r"xcross\.lambda1: 1\.0 -> 0\.5"):
        claim_run_folder(tmp_path, other)


def test_a_definition_is_compared_as_stored_tuples_and_paths_included(tmp_path):
    from xcross_lib.provenance import as_stored

    definition = {"sources": ("Sports", "Electronics"), "data": Path("some/dir"), "b": 1, "a": {"y": 2.0, "x": None}}
    assert as_stored(definition) == {"a": {"x": None, "y": 2.0}, "b": 1, "data": "some/dir", "sources": ["Sports", "Electronics"]}
    assert list(as_stored(definition)) == ["a", "b", "data", "sources"]
    digest = claim_run_folder(tmp_path, definition)
    assert json.loads((tmp_path / "run_definition.json").read_text())["definition"] == as_stored(definition)
    assert claim_run_folder(tmp_path, {**definition, "sources": ["Sports", "Electronics"], "data": "some/dir"}) == digest
    with pytest.raises(RunMismatchError, match="sources"):
        claim_run_folder(tmp_path, {**definition, "sources": ("Electronics", "Sports")})


@pytest.fixture
def made_target(tiny_data_dir, tmp_path, monkeypatch):
    from xcross_lib.experiments import DomainData

    monkeypatch.setenv("XCROSS_OUTPUTS_DIR", str(tmp_path / "outputs"))
    return DomainData.load("Tools", tiny_data_dir, output_dir=tmp_path / "outputs")


def test_a_source_run_with_other_model_settings_is_refused(made_target, tmp_path):
    from xcross_lib.experiments import train_source_model

    train_config = TrainConfig(batch_size=4, max_length=48, bf16=False)
    out = tmp_path / "source"
    train_source_model(made_target, "tiny-bert", ScorerConfig(pooling="mean"), train_config, 8, 4, out, progress=False)
    with pytest.raises(RunMismatchError, match="scorer.pooling: 'mean' -> 'cls'"):
        train_source_model(made_target, "tiny-bert", ScorerConfig(pooling="cls"), train_config, 8, 4, out, progress=False)


def test_xcross_runs_with_other_settings_go_to_other_folders(made_target, tmp_path, monkeypatch):
    from xcross_lib import experiments

    srcs = two_tower_sources(2)
    monkeypatch.setattr(experiments, "source_models", lambda names: [{"name": s, "adapter_sha256": s} for s in names])
    frames = made_target.frames
    train_config = TrainConfig(batch_size=4, max_length=48, bf16=False)
    outs = {}
    for lambda1 in (1.0, 0.5):
        config = XCrossConfig(lambda1=lambda1)
        model = XCross(load_backbone("tiny-bert", seed=0), srcs, config)
        run = experiments.run_xcross(made_target, ["A", "B"], config, train_config, frames["train"], frames["validation"],
                                     frames["test"], tmp_path / "xcross" / "Tools-full-Kall", model=model,
                                     with_untrained=False, progress=False)
        outs[lambda1] = run.out
        assert json.loads((run.out / "xcross.json").read_text())["xcross"]["lambda1"] == lambda1
    assert outs[1.0] != outs[0.5] and outs[1.0].name.startswith("Tools-full-Kall-")
    found = experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"], frames["test"])
    assert sorted(map(str, found["folder"])) == sorted(map(str, outs.values()))
    assert found["record"].map(lambda r: r["parameters"]["per_layer"]).tolist() == [256, 256]
    # asked for a run like its own (notebook 04: one budget a table, whatever the X-Cross settings), a run of
    # another budget is left out, named with what differs
    def like(config, val):
        return experiments.xcross_definition(made_target, ["A", "B"], XCrossConfig(), config, frames["train"], val,
                                             backbone=model.backbone_name)
    same = experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"], frames["test"],
                                     like(train_config, frames["validation"]))
    assert len(same) == 2 and not same.attrs["other_settings"]  # lambda1 1.0 and 0.5: X-Cross settings are free
    other = experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"], frames["test"],
                                      like(TrainConfig(batch_size=4, max_length=48, bf16=False, epochs=3), frames["validation"]))
    assert not len(other) and len(other.attrs["other_settings"]) == 2
    assert all("train.epochs: 1 -> 3" in o for o in other.attrs["other_settings"])
    elsewhere = experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"], frames["test"],
                                          like(train_config, frames["validation"].head(2)))
    assert not len(elsewhere) and all("validation_users.n: " in o for o in elsewhere.attrs["other_settings"])
    # shipped (the table, record and per-user results, no weights), then gone from outputs/xcross: still found
    run_out = outs[0.5]
    shipped = experiments.ship_xcross_run(run_out, pd.DataFrame({"model": ["X-Cross"]}), pd.DataFrame({"step": [1]}))
    assert shipped == tmp_path / "reference" / "xcross_runs" / run_out.name
    shutil.rmtree(run_out)
    found = experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"], frames["test"])
    assert sorted(f.name for f in found["folder"]) == sorted(o.name for o in outs.values())
    from_shipped = found[found["folder"].map(lambda f: f.parent.name == "xcross_runs")]
    assert len(from_shipped) == 1 and from_shipped["record"].iloc[0]["xcross"]["lambda1"] == 0.5
    # other training users: not this table's run
    assert not len(experiments.finished_runs(tmp_path / "xcross" / "Tools-full-Kall", frames["train"].head(3),
                                             frames["test"]))


def test_a_shipped_run_is_found_only_for_its_own_definition_and_test_users(tmp_path):
    """shipped_run (notebook 04 on a clone without weights): a learning-curve point's record read as a
    baseline's, and nothing for another definition, other test users or a folder whose name lies."""
    from xcross_lib.experiments import shipped_run
    from xcross_lib.provenance import definition_digest, write_json_atomic

    definition = {"kind": "source LoRA", "train_users": {"n": 3, "sha256": "abc"}, "train": {"learning_rate": 2e-4}}
    digest = definition_digest(definition)
    point = tmp_path / "reference" / "learning_curve" / "Toys-curve" / f"LoRA-n3-{digest}"
    write_json_atomic(point / "run_definition.json", {"digest": digest, "definition": definition})
    write_json_atomic(point / "point.json", {"params_per_layer": 4, "params_without_head": 12, "params_with_head": 20,
                                             "params_trained": 20, "train_wall_s": 7.5, "kept_step": 3})
    per_user = pd.DataFrame({"user": [1, 2, 5], "hit@1": [1.0, 0.0, 0.0], "mrr": [1.0, 0.5, 0.25]})
    per_user.to_parquet(point / "test_per_user.parquet")
    test = pd.DataFrame({"user": [5, 1, 2]})
    found = shipped_run(definition, test, output_dir=tmp_path)
    assert found.name == point.name and found.wall_s == 7.5 and found.kept_step == 3 and found.per_user.equals(per_user)
    assert found.untrained is None and shipped_run(definition, test, tmp_path, with_untrained=True) is None
    assert found.parameters == {"per_layer": 4, "without_head": 12, "with_head": 20, "trainable": 20}
    assert shipped_run(definition, test.head(2), output_dir=tmp_path) is None  # scored on other users
    other = {**definition, "train": {"learning_rate": 1e-4}}
    assert shipped_run(other, test, output_dir=tmp_path) is None
    # a folder with the other definition's digest in its name but this definition inside: not taken for it
    liar = point.parent / f"LoRA-n3-{definition_digest(other)}"
    shutil.copytree(point, liar)
    assert shipped_run(other, test, output_dir=tmp_path) is None


def test_train_config_refuses_a_typo_in_the_selection_metric():
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig(select_metric="hit1")
    with pytest.raises(ValueError, match="validate_every"):
        TrainConfig(validate_every=0)


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-deberta"])
def test_the_frozen_prefix_cache_gives_the_same_scores_and_gradients(task, kind):
    """Two towers, the top layer integrated: the two layers below it are computed once per segment."""
    titles, frame = task
    cached = xcross(XCrossConfig(top_k_layers=1), kind=kind)
    plain = xcross(XCrossConfig(top_k_layers=1), kind=kind)
    plain.prefix_cache = None
    plain.load_trainable_state(cached.trainable_state())
    assert cached.prefix_cache is not None and cached.integrated_layers == [2]
    b = batch_of(cached, titles, frame, users=6, distinct=True)
    results = []
    for model in (plain, cached, cached):  # the second cached pass reads every segment from the cache
        model.eval()  # no dropout in the head: the comparison is of arithmetic (gradients still flow)
        model.zero_grad()
        scores = model(**b.model_inputs())
        scores.square().sum().backward()
        results.append((scores.detach(), [p.grad.clone() for p in model.integrators.parameters()]))
    segments = b.history_input_ids.shape[0] + b.input_ids.shape[0]
    assert cached.prefix_cache.computed == segments  # computed on the first pass only
    for scores, grads in results[1:]:
        torch.testing.assert_close(scores, results[0][0], rtol=1e-4, atol=1e-5)
        for g, g0 in zip(grads, results[0][1]):
            torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-6)


def test_no_prefix_cache_where_nothing_repeats_or_nothing_is_below():
    assert xcross().prefix_cache is None  # every layer integrated: nothing frozen below the first
    pair_sources = []
    for s in range(2):
        torch.manual_seed(s)
        pair_sources.append(Scorer(load_backbone("tiny-bert", seed=0), ScorerConfig(encoding="pair")).eval())
    model = XCross(load_backbone("tiny-bert", seed=0), pair_sources, XCrossConfig(top_k_layers=1))
    assert model.prefix_cache is None  # pair prompts: one per (history, candidate)


def test_embedding_in_chunks_of_similar_length_equals_one_call(task):
    from xcross_lib.models.scorer import embed_by_length

    titles, frame = task
    model = two_tower_sources(1)[0]
    ids = [[101] + [2000 + k] * length + [102] for k, length in enumerate([1, 9, 3, 12, 2, 12, 5, 1])]
    width = max(map(len, ids))
    input_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    widths = []

    def embed(i, m):
        widths.append(i.shape[1])
        return model.embed(i, m)

    with torch.no_grad():
        chunked = embed_by_length(embed, input_ids, mask)
        whole = model.embed(input_ids, mask)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert len(widths) > 2 and widths[0] == width and min(widths) == 3  # the shortest rows: [CLS] x [SEP]
    assert sum(widths) < len(widths) * width

    widths.clear()  # off the CPU (meta tensors stand in for a GPU's): one call, padded to the batch's width
    out = embed_by_length(lambda i, m: widths.append(i.shape[1]) or torch.empty(len(i), 4, device=i.device),
                          input_ids.to("meta"), mask.to("meta"))
    assert widths == [width] and out.shape == (len(ids), 4)


def test_a_finished_run_of_the_same_definition_is_adopted_not_trained_again(made_target, tmp_path, monkeypatch):
    """Notebook 03 at the learning curve's size defines the same run as the curve's point: its
    training is copied in (adopted_from.json names the twin) and resumes at its end; the test users
    are scored again from the adopted weights. A run that differs in one setting trains anew."""
    from xcross_lib import experiments
    from xcross_lib.training import trainer

    monkeypatch.setattr(experiments, "source_models", lambda names: [{"name": s, "adapter_sha256": s} for s in names])
    frames, home = made_target.frames, tmp_path / "xcross"
    train_config = TrainConfig(batch_size=4, max_length=48, bf16=False)

    def run(out, lambda1=1.0):
        config = XCrossConfig(lambda1=lambda1)
        model = XCross(load_backbone("tiny-bert", seed=0), two_tower_sources(2), config)
        return experiments.run_xcross(made_target, ["A", "B"], config, train_config, frames["train"],
                                      frames["validation"], frames["test"], out, model=model, with_untrained=False,
                                      progress=False, reuse_under=home)

    first = run(home / "Tools-learning-curve" / "X-Cross-n8")
    assert experiments.adopted_from(first.out) is None
    trained_steps = []
    real_loss = trainer.multiple_choice_loss
    monkeypatch.setattr(trainer, "multiple_choice_loss", lambda *a: trained_steps.append(1) or real_loss(*a))
    twin = run(home / "Tools-full-Kall")
    assert trained_steps == []  # resumed at the end: no step trained again
    assert experiments.adopted_from(twin.out)["folder"].endswith("Tools-learning-curve/" + first.out.name)
    assert twin.out.name.split("-")[-1] == first.out.name.split("-")[-1]  # the same definition digest
    pd.testing.assert_frame_equal(twin.per_user, first.per_user)
    assert twin.result.best_step == first.result.best_step and twin.result.wall_s >= first.result.wall_s
    record = json.loads((twin.out / "xcross.json").read_text())
    assert record["adopted_from"]["folder"] == experiments.adopted_from(twin.out)["folder"]
    other = run(home / "Tools-other", lambda1=0.5)
    assert experiments.adopted_from(other.out) is None and trained_steps  # another definition: trained
