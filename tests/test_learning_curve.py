"""The learning curve's bookkeeping (xcross_lib/learning_curve.py) on hand-made per-user frames:
epochs per size, the table's differences and paired t-tests against a hand computation, the smallest
significant size, and finished points read back once whether kept here or shipped."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xcross_lib.learning_curve import (CHOSEN, POINT, auto_epochs, chosen_on_validation, curve_table, finished_points,
                                       point_name, shipped_root, smallest_significant, validation_curves)
from xcross_lib.metrics import METRICS

pytestmark = pytest.mark.unit


def per_user(hit1, mrr, users=None):
    users = list(range(len(hit1))) if users is None else users
    frame = pd.DataFrame({"user": users, "hit@1": hit1, "mrr": mrr})
    for m in METRICS:
        if m not in frame:
            frame[m] = frame["hit@1"]
    return frame


def record(model, size, **extra):
    return {"model": model, "size": size, "kept_step": 2, "select_metric": "mrr", "validation_best": 30.0, "curve": [{"step": 1, "loss": 3.4}, {"step": 2, "loss": 3.3}],
            "validation": [{"step": 0, "hit@1": 0.1, "mrr": 0.2}, {"step": 2, "hit@1": 0.2, "mrr": 0.3}], **extra}


def test_auto_epochs_sees_about_min_examples_within_the_cap():
    assert auto_epochs(100, 3000, 5) == 5  # 30 passes wanted, capped
    assert auto_epochs(1000, 3000, 5) == 3
    assert auto_epochs(999, 3000, 5) == 4  # ceil(3.003)
    assert auto_epochs(3000, 3000, 5) == 1
    assert auto_epochs(6577, 3000, 5) == 1  # never below one epoch
    with pytest.raises(ValueError):
        auto_epochs(0, 3000, 5)


def test_point_names_are_folder_names():
    assert point_name("X-Cross (head frozen)", 300) == "X-Cross-head-frozen-n300"
    assert point_name("Pooler + Scorer", 100) == "Pooler+Scorer-n100"
    assert point_name("LoRA", 6577) == "LoRA-n6577"


def test_curve_table_differences_and_p_values_by_hand():
    model_hit, model_mrr = [1, 1, 0, 1, 0, 1], [1.0, 0.5, 0.2, 1.0, 0.25, 0.5]
    ref_hit, ref_mrr = [0, 1, 0, 0, 0, 1], [0.5, 1.0, 0.2, 0.33, 0.25, 0.5]
    refs = {"A alone": per_user(ref_hit, ref_mrr), "same": per_user(model_hit, model_mrr)}
    table = curve_table([(record("X-Cross", 300, commit="abc"), per_user(model_hit, model_mrr))], refs)
    row = table[table["model"] == "X-Cross"].iloc[0]
    # hand computation of the paired t-test on MRR: d = x - y, t = mean(d) / (sd(d) / sqrt(n))
    d = np.array(model_mrr) - np.array(ref_mrr)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * stats.t.sf(abs(t), df=len(d) - 1)
    assert row["mrr diff vs A alone"] == pytest.approx(round(100 * d.mean(), 2))
    assert row["p mrr vs A alone"] == pytest.approx(p, rel=1e-9)
    # the detectable difference: the one at which the test's power (noncentral t, by hand) is 0.8
    sd, crit = d.std(ddof=1), stats.t.ppf(0.975, len(d) - 1)
    mdd = row["mdd mrr vs A alone"] / 100
    nc = mdd / (sd / math.sqrt(len(d)))
    assert stats.nct.sf(crit, len(d) - 1, nc) + stats.nct.cdf(-crit, len(d) - 1, nc) == pytest.approx(0.8, abs=2e-3)
    assert row["hit@1 diff vs A alone"] == pytest.approx(100 * 2 / 6, abs=0.01)
    # identical per-user metrics: no difference, p = 1
    assert row["mrr diff vs same"] == 0 and row["p mrr vs same"] == 1.0
    # reference rows first, with their means in percent and no size
    assert table["model"].tolist() == ["A alone", "same", "X-Cross"]
    assert table.loc[0, "hit@1"] == pytest.approx(100 * 2 / 6, abs=0.01) and pd.isna(table.loc[0, "size"])
    assert row["size"] == 300 and row["commit"] == "abc"


def test_curve_table_refuses_points_scored_on_other_users():
    refs = {"A alone": per_user([0, 1, 0], [0.2, 1.0, 0.3])}
    with pytest.raises(ValueError, match="different users"):
        curve_table([(record("LoRA", 100), per_user([1, 1, 0], [1.0, 1.0, 0.3], users=[0, 1, 7]))], refs)


def test_smallest_significant_needs_every_reference_above_and_below_alpha():
    table = pd.DataFrame({
        "model": ["X-Cross"] * 3 + ["LoRA"],
        "size": [100, 300, 1000, 1000],
        "mrr diff vs A": [1.0, 2.0, 2.5, -1.0], "p mrr vs A": [0.01, 0.01, 0.001, 0.01],
        "mrr diff vs B": [0.5, 1.0, 1.5, 0.3], "p mrr vs B": [0.20, 0.04, 0.01, 0.5],
    })
    assert smallest_significant(table, "X-Cross", ["A", "B"]) == 300
    assert smallest_significant(table, "X-Cross", ["A"]) == 100
    assert smallest_significant(table, "X-Cross", ["A", "B"], alpha=0.02) == 1000
    assert smallest_significant(table, "LoRA", ["A"]) is None  # significant, but below A


def test_the_xcross_variant_with_the_higher_kept_validation_score_is_chosen_at_each_size():
    frozen_100, trained_100 = record("X-Cross (head frozen)", 100, validation_best=20.5), record("X-Cross", 100, validation_best=20.1)
    frozen_300, trained_300 = record("X-Cross (head frozen)", 300, validation_best=19.9), record("X-Cross", 300, validation_best=21.0)
    tie_frozen, tie_trained = record("X-Cross (head frozen)", 1000, validation_best=19.8), record("X-Cross", 1000, validation_best=19.8)
    lora = record("LoRA", 300, validation_best=40.0)  # another model: never chosen, however high
    chosen = chosen_on_validation([trained_100, frozen_100, frozen_300, trained_300, lora, tie_trained, tie_frozen])
    assert chosen[100] is frozen_100 and chosen[300] is trained_300 and chosen[1000] is tie_frozen  # a tie: head frozen
    trained_3000 = record("X-Cross", 3000, validation_best=30.0)  # its head-frozen twin not run yet: no choice there
    assert 3000 not in chosen_on_validation([frozen_100, trained_100, trained_3000])
    only_trained = chosen_on_validation([trained_100, trained_3000])  # a curve of one variant: nothing to choose
    assert only_trained[100] is trained_100 and only_trained[3000] is trained_3000
    with pytest.raises(ValueError, match="different validation metrics"):
        chosen_on_validation([frozen_100, {**trained_100, "select_metric": "hit@1"}])
    # the table marks the choice, and the smallest significant size of the chosen variant follows it
    test = per_user([1, 1, 0, 1], [1.0, 1.0, 0.2, 1.0])
    weak = per_user([0, 1, 0, 0], [0.3, 1.0, 0.2, 0.25])
    refs = {"A": per_user([0, 1, 0, 0], [0.2, 0.5, 0.2, 0.2])}
    table = curve_table([(frozen_100, test), (trained_100, weak), (frozen_300, weak), (trained_300, weak), (lora, test)], refs)
    marks = {(m, s): c for m, s, c in zip(table["model"], table["size"], table["chosen on validation"])}
    undecided = curve_table([(frozen_100, test), (trained_100, weak), (trained_3000, test)], refs)
    assert pd.isna(undecided.loc[undecided["size"] == 3000, "chosen on validation"]).all()  # neither chosen nor not
    assert marks[("X-Cross (head frozen)", 100)] is True and marks[("X-Cross", 100)] is False
    assert marks[("X-Cross", 300)] is True and marks[("X-Cross (head frozen)", 300)] is False
    assert pd.isna(marks[("LoRA", 300)]) and pd.isna(table.loc[table["model"] == "A", "chosen on validation"]).all()
    significant = table.assign(**{"p mrr vs A": 0.01})  # every row significant: the sizes alone decide
    assert smallest_significant(significant, "X-Cross", ["A"]) == 100  # head trained at 100 is above A too
    no_frozen_100 = significant.assign(**{"mrr diff vs A": [0.0 if (m, s) == ("X-Cross (head frozen)", 100) else 1.0
                                                            for m, s in zip(table["model"], table["size"])]})
    assert smallest_significant(no_frozen_100, CHOSEN, ["A"]) == 300  # the chosen one at 100 is not above
    assert smallest_significant(no_frozen_100, "X-Cross", ["A"]) == 100


def test_notebook_12s_xcross_row_is_the_largest_size_chosen_on_validation(tmp_path):
    from types import SimpleNamespace

    from xcross_lib import single_domain

    data = SimpleNamespace(domain=SimpleNamespace(name="Tools", fingerprint="f1"),
                           protocol=SimpleNamespace(info={"candidates_sha256": "c1"}))
    root = tmp_path / "reference" / "learning_curve" / "Tools-A+B-abc-learning-curve"
    definition = json.dumps({"definition": {"data_fingerprint": "f1", "candidates_sha256": "c1"}})
    for name, rec, tested in [("X-Cross-n300-a", record("X-Cross", 300, validation_best=25.0), True),
                              ("X-Cross-n1000-b", record("X-Cross", 1000, validation_best=19.0), True),
                              ("X-Cross-head-frozen-n1000-c", record("X-Cross (head frozen)", 1000, validation_best=19.5), True),
                              ("X-Cross-head-frozen-n1000-d", record("X-Cross (head frozen)", 1000, validation_best=30.0), False),
                              ("X-Cross-n3000-e", record("X-Cross", 3000, validation_best=40.0), True)]:  # twin not run
        (root / name).mkdir(parents=True)
        (root / name / POINT).write_text(json.dumps(rec))
        (root / name / "run_definition.json").write_text(definition)
        if tested:  # d: a search point, validated only
            per_user([0, 1], [0.5, 1.0]).to_parquet(root / name / "test_per_user.parquet")
    folder, frame = single_domain.largest_xcross_point(data, tmp_path)
    assert folder.name == "X-Cross-head-frozen-n1000-c" and len(frame) == 2  # not the name that sorts last, nor 3000
    data.domain.fingerprint = "f2"  # other data: none of these
    other = single_domain.largest_xcross_point(data, tmp_path)
    assert other is None or other[0].parent.parent != root.parent


def _write_point(base, name, rec, frame):
    (base / name).mkdir(parents=True)
    (base / name / POINT).write_text(json.dumps(rec))
    frame.to_parquet(base / name / "test_per_user.parquet")


def test_finished_points_count_a_point_once_and_only_on_the_same_test_users(tmp_path):
    root = tmp_path / "out" / "xcross" / "Tools-Sports+Electronics-abc-learning-curve"
    shipped = shipped_root(root, tmp_path / "out")
    assert shipped == tmp_path / "out" / "reference" / "learning_curve" / root.name
    test = per_user([0, 1, 0], [0.2, 1.0, 0.3])
    _write_point(root, "LoRA-n100-d1", record("LoRA", 100), test)
    _write_point(shipped, "LoRA-n100-d1", record("LoRA", 100), test)  # the same point, shipped: once
    _write_point(shipped, "X-Cross-n300-d2", record("X-Cross", 300), test)  # only shipped: read from there
    _write_point(root, "X-Cross-n100-d3", record("X-Cross", 100), per_user([0, 1], [0.2, 1.0]))  # other users
    (root / "X-Cross-n3000-d4").mkdir()
    (root / "X-Cross-n3000-d4" / POINT).write_text(json.dumps(record("X-Cross", 3000)))  # no test metrics yet
    found = finished_points(root, test, tmp_path / "out")
    assert sorted((r["model"], r["size"]) for r, _ in found) == [("LoRA", 100), ("X-Cross", 300)]


def test_validation_curves_mark_the_kept_step():
    losses, validations = validation_curves([(record("LoRA", 100), None), (record("X-Cross", 300, kept_step=0), None)])
    assert len(losses) == 4 and set(losses.columns) == {"model", "size", "point", "search", "step", "loss"}
    kept = validations[validations["kept"]]
    assert sorted(zip(kept["model"], kept["step"])) == [("LoRA", 2), ("X-Cross", 0)]


def test_learning_curve_plot_has_a_panel_per_metric_with_the_kept_state_starred():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xcross_lib.plots import plot_learning_curves

    losses, validations = validation_curves([(record("LoRA", 100), None), (record("X-Cross", 300, kept_step=0), None)])
    axes = plot_learning_curves(losses, validations, ("mrr", "hit@1"))
    assert axes.shape == (2, 3)  # a row per model (sorted): loss, MRR, Hit@1
    for row, model, kept_step in zip(axes, ["LoRA", "X-Cross"], [2, 0]):
        assert "training loss" in row[0].get_title() and model in row[0].get_title()
        for ax, metric in zip(row[1:], ["mrr", "hit@1"]):
            star = [line for line in ax.get_lines() if line.get_marker() == "*"]
            assert len(star) == 1 and list(star[0].get_xdata()) == [kept_step]
            expected = validations[(validations["model"] == model) & (validations["step"] == kept_step)][metric]
            assert list(star[0].get_ydata()) == list(expected)
    assert "Hit@1" in axes[0][2].get_title() and "MRR" in axes[0][1].get_title()
    assert plot_learning_curves(losses, validations, "mrr").shape == (2, 2)  # one metric by name
    plt.close("all")


def test_two_points_at_one_size_stay_two_curves_and_only_the_final_one_is_starred():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xcross_lib.plots import plot_learning_curves

    final = record("X-Cross", 1000, folder="X-Cross-n1000-a", test_scored=True)
    search = record("X-Cross", 1000, folder="X-Cross-n1000-b", test_scored=False, kept_step=0,
                    curve=[{"step": 1, "loss": 3.1}, {"step": 2, "loss": 3.0}, {"step": 3, "loss": 2.9}])
    losses, validations = validation_curves([(final, None), (search, None)])
    assert sorted(set(zip(validations["point"], validations["search"]))) == [("X-Cross-n1000-a", False), ("X-Cross-n1000-b", True)]
    axes = plot_learning_curves(losses, validations, "mrr")
    loss_lines = [line for line in axes[0][0].get_lines() if line.get_label() != "ln 30"]
    assert sorted(len(line.get_xdata()) for line in loss_lines) == [2, 3]  # one line a point, not one joined line
    assert [line.get_linestyle() for line in loss_lines] == ["-", ":"]
    star = [line for line in axes[0][1].get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [2]  # the final point's kept step; the search's is not starred
    assert [t.get_text() for t in axes[0][1].get_legend().get_texts()] == ["1000 users", "1000 users (search)"]
    plt.close("all")


def test_report_training_curves_read_every_committed_point_once_with_its_target(tmp_path):
    from xcross_lib import report
    from xcross_lib.paths import REPO_ROOT

    lc = tmp_path / "reference" / "learning_curve"
    search = record("X-Cross", 1000, kept_step=0, target="Toyland", test_scored=False)  # a search point: no test rows
    (lc / "Toyland-A+B-abc-learning-curve" / "X-Cross-n1000-d1").mkdir(parents=True)
    (lc / "Toyland-A+B-abc-learning-curve" / "X-Cross-n1000-d1" / POINT).write_text(json.dumps(search))
    shipped = sorted((REPO_ROOT / "outputs" / "reference" / "learning_curve").glob(f"*/*/{POINT}"))
    if shipped:  # a copy of a committed point under another outputs folder counts once, the repository's
        twin = lc / shipped[0].parent.parent.name / shipped[0].parent.name
        twin.mkdir(parents=True)
        (twin / POINT).write_text(json.dumps(record("LoRA", 7, target="Twin")))
    losses, validations = report.training_curves(tmp_path)
    mine = validations[validations["target"] == "Toyland"]
    assert list(mine["step"]) == [0, 2] and list(mine["mrr"]) == [0.2, 0.3] and list(mine["kept"]) == [True, False]
    assert list(losses.loc[losses["target"] == "Toyland", "loss"]) == [3.4, 3.3]
    assert "Twin" not in set(validations["target"])
    assert len(set(validations["target"])) == 1 + len({json.loads(p.read_text())["target"] for p in shipped})


def test_no_in_domain_row_from_a_model_trained_on_another_split(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from xcross_lib import learning_curve

    data = SimpleNamespace(domain=SimpleNamespace(name="Tools", fingerprint="f1"),
                           protocol=SimpleNamespace(info={"candidates_sha256": "c1"}))
    monkeypatch.setattr(learning_curve, "available_sources", lambda output_dir=None: ["Tools", "Sports"])
    scored = []
    monkeypatch.setattr(learning_curve, "evaluate_source", lambda *a, **k: scored.append(a))
    test = per_user([0, 1], [0.5, 1.0])
    for record in ({"data_fingerprint": "f1", "candidates_sha256": "c2"},  # another seed or user fraction
                   {"data_fingerprint": "f2", "candidates_sha256": "c1"},  # other data
                   {}):  # a record that does not say
        monkeypatch.setattr(learning_curve, "read_record", lambda name, r=record: r)
        assert learning_curve.in_domain_per_user(data, test, tmp_path / "root") == {}
    assert scored == [] and not (tmp_path / "root").exists()
    assert "trained on other data or another split" in capsys.readouterr().out
    # a target without a model of its own: no row, nothing said
    monkeypatch.setattr(learning_curve, "available_sources", lambda output_dir=None: ["Sports"])
    assert learning_curve.in_domain_per_user(data, test, tmp_path / "root") == {} and scored == []


def test_one_untrained_average_serves_every_parametrisation_but_not_other_lambdas(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from xcross_lib import learning_curve
    from xcross_lib.errors import RunMismatchError
    from xcross_lib.models.xcross import XCrossConfig

    data = SimpleNamespace(domain=SimpleNamespace(name="Tools", fingerprint="f1"),
                           protocol=SimpleNamespace(info={"candidates_sha256": "c1"}))
    monkeypatch.setattr(learning_curve, "source_models", lambda names: [{"name": n, "adapter_sha256": "x"} for n in names])
    monkeypatch.setattr(learning_curve, "evaluate_source", lambda *a, **k: pytest.fail("scored again"))
    test = per_user([0, 1], [0.5, 1.0])
    root = tmp_path / "out" / "xcross" / "Tools-A+B-abc-learning-curve"
    folder = root / f"references-{learning_curve.users_digest(test)['sha256']}"
    paper = XCrossConfig()
    learning_curve.claim_run_folder(folder, learning_curve.references_definition(data, ["A", "B"], 0, paper, test))
    for name in ("A alone", "B alone", "untrained average", "text similarity"):
        test.to_parquet(folder / f"{name.replace(' ', '_')}.parquet")
    out = tmp_path / "out"
    rows = learning_curve.reference_per_user(data, ["A", "B"], 0, XCrossConfig(parametrisation="normalised"), test,
                                             root, output_dir=out)
    assert sorted(rows) == ["A alone", "B alone", "text similarity", "untrained average"]
    with pytest.raises(RunMismatchError, match="lambda1"):
        learning_curve.reference_per_user(data, ["A", "B"], 0, XCrossConfig(lambda1=0.0), test, root, output_dir=out)
