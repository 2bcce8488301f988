"""The learning curve over target data: how many target users X-Cross needs to separate from its
sources, beside a new target LoRA and Pooler + Scorer trained on the same users.

One point = one model trained on the first `size` users of a seeded order of the training split (the
subsets are nested: the 300 hold the 100), its kept state chosen on the validation users, scored on
the test users. Each point lives in its own folder under the curve's root with `point.json` (what it
is, its validation and loss curves, its wall time) and `test_per_user.parquet`; a finished point is
never trained again, so the batch runner can run the curve one point per notebook call and resume.

The rows every point is compared with (each source alone, the untrained average of the sources'
streams, text similarity) do not depend on the size; they are scored once per test-user set and
cached under `<root>/references-<test users digest>/`. Where the target has a source model of its own
(trained on its whole training split), it is scored too, as the row `<target> alone (in-domain)`
under `<root>/in-domain-<test users digest>/`: the level a fully trained target model of the
source recipe reaches, i.e. the room X-Cross and the target LoRA have above their start. It is not
among the rows that the smallest significant size is measured against.

    root/
      references-<digest>/<row>.parquet
      in-domain-<digest>/in_domain.parquet   only where the target has a source model
      X-Cross-n300-<digest>/           run_xcross's folder (run_definition.json, run/, xcross.json)
        point.json, test_per_user.parquet
      LoRA-n300-<digest>/              train_source_model's folder, the same two files added
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .experiments import (DomainData, best_source_index, build_baseline, build_xcross, evaluate_source,
                          parameter_columns, parameter_counts, reference_rows, resolve_sources, run_xcross,
                          seeded_subset, source_models, source_run_definition, train_source_model, users_digest,
                          xcross_definition, xcross_root)
from .data.encoding import PromptEncoder
from .metrics import minimum_detectable_difference, paired_ttest, summarize
from .models.scorer import scorer_config_of
from .models.source import available_sources, read_record
from .paths import outputs_dir
from .provenance import (RUN_DEFINITION, claim_run_folder, compute_device, copy_files_atomic, definition_digest,
                         git_commit, now_utc, stamp, write_csv_atomic, write_json_atomic)
from .training import TrainConfig, evaluate_scorer

MODELS = ("X-Cross", "X-Cross (head frozen)", "LoRA", "Pooler + Scorer")
XCROSS_VARIANTS = MODELS[:2]
CHOSEN = "X-Cross (chosen on validation)"  # per size, the variant chosen_on_validation keeps
UNTRAINED = "untrained average"
IN_DOMAIN = "{target} alone (in-domain)"
POINT = "point.json"


def curve_root(target: str, source_names: list[str], output_dir=None) -> Path:
    """outputs/xcross/<target>-<sources>-<digest>-learning-curve."""
    root = xcross_root(target, source_names, output_dir)
    return root.with_name(root.name + "-learning-curve")


@dataclass
class CurveSetup:
    """What every point of one target's curve shares: its data, the source domains, the validation
    and test users, the source whose pooler and scorer X-Cross copies, its backbone and the folder."""
    data: DomainData
    source_names: list[str]
    val: pd.DataFrame
    test: pd.DataFrame
    head_from: int
    backbone: str
    root: Path

    def size_and_epochs(self, n_train_users: int | None, epochs, min_examples: int, max_epochs: int,
                        seed: int = 0) -> tuple[int, int]:
        """(training users of the point, its epochs): epochs an integer, or "auto" (auto_epochs)."""
        size = len(seeded_subset(self.data.frames["train"], n_train_users, seed))
        return size, auto_epochs(size, min_examples, max_epochs) if epochs == "auto" else int(epochs)


def curve_setup(target: str, sources, data_dir=None, seed: int = 0, user_fraction: float = 1.0,
                n_val_users: int | None = 500, n_test_users: int | None = None, max_length: int = 128,
                output_dir=None) -> CurveSetup:
    """Load the target, bind the sources, draw the validation and test users (None: all) and choose
    the head's source by validation Hit@1 (best_source_index)."""
    data = DomainData.load(target, data_dir, seed, user_fraction, output_dir)
    source_names = resolve_sources(sources, data.domain.name, output_dir)
    val = seeded_subset(data.frames["validation"], n_val_users, seed)
    test = seeded_subset(data.frames["test"], n_test_users, seed)
    head_from, _ = best_source_index(source_names, data, val, max_length)
    return CurveSetup(data, source_names, val, test, head_from, read_record(source_names[head_from])["backbone"],
                      curve_root(data.domain.name, source_names, output_dir))


def write_curve_tables(setup: CurveSetup, xcross_config, primary_metric: str = "mrr", max_length: int = 128,
                       seed: int = 0, command: str = "", wall_s: float | None = None, write_reference: bool = False,
                       output_dir=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The curve's table (every tested point beside the reference rows, with paired t-tests and the
    differences those tests could detect; the in-domain row where the target has a model), its
    search table (every point's settings and validation curve, no test figure) and, per model, the
    smallest size significantly above each source alone and the untrained average on
    primary_metric; written to the root (and to outputs/reference/ when write_reference)."""
    references = reference_per_user(setup.data, setup.source_names, setup.head_from, xcross_config, setup.test,
                                    setup.root, max_length, seed, ship=write_reference, output_dir=output_dir)
    references.update(in_domain_per_user(setup.data, setup.test, setup.root, max_length, ship=write_reference,
                                         output_dir=output_dir))
    table = curve_table(finished_points(setup.root, setup.test, output_dir), references)
    against = [f"{s} alone" for s in setup.source_names] + [UNTRAINED]
    answer = {m: smallest_significant(table, m, against, primary_metric) for m in MODELS if m in set(table["model"])}
    if set(XCROSS_VARIANTS) & set(table["model"]):
        answer[CHOSEN] = smallest_significant(table, CHOSEN, against, primary_metric)
    table.insert(0, "target", setup.data.domain.name)
    table["sources"] = "+".join(setup.source_names)
    table["primary_metric"] = primary_metric
    table["backbone"] = setup.backbone
    table = stamp(table, command or "notebook", wall_s)
    search = stamp(search_table(setup.root, output_dir), command or "notebook", wall_s)
    write_csv_atomic(table, setup.root / "learning_curve.csv")
    write_csv_atomic(search, setup.root / "search.csv")
    if write_reference:
        reference, name = outputs_dir(output_dir) / "reference", setup.data.domain.name.lower()
        write_csv_atomic(table, reference / f"learning_curve_{name}.csv")
        write_csv_atomic(search, reference / f"search_learning_curve_{name}.csv")
    return table, search, answer


def auto_epochs(n_users: int, min_examples: int, max_epochs: int) -> int:
    """Epochs for a point: enough passes to see about `min_examples` examples, at least one, at most
    `max_epochs` (validation then chooses the kept step within them)."""
    if n_users < 1:
        raise ValueError(f"a point needs at least one training user, got {n_users}")
    return int(min(max_epochs, max(1, math.ceil(min_examples / n_users))))


def reference_per_user(data: DomainData, source_names: list[str], head_from: int, xcross_config, test: pd.DataFrame,
                       root: Path, max_length: int = 128, seed: int = 0, ship: bool = False,
                       output_dir=None) -> dict[str, pd.DataFrame]:
    """Per-user test metrics of each source alone, the untrained X-Cross (every W at zero: the
    average of the sources' streams) and text similarity; scored once, then read back (from the
    shipped copy under outputs/reference/learning_curve/ when this outputs folder lacks them).
    ship: also copy them there."""
    folder = Path(root) / f"references-{users_digest(test)['sha256']}"
    shipped = shipped_root(root, output_dir) / folder.name
    if not folder.is_dir() and (shipped / RUN_DEFINITION).is_file():
        shutil.copytree(shipped, folder)  # claim_run_folder below still checks that it is the same definition
    # W = 0 is the same model in every parametrisation (tests/test_training_setup.py): one untrained
    # average serves them all, computed and recorded as "paper"
    xcross_config = replace(xcross_config, parametrisation="paper")
    claim_run_folder(folder, references_definition(data, source_names, head_from, xcross_config, test, max_length, seed))
    names = [f"{s} alone" for s in source_names] + [UNTRAINED, "text similarity"]
    paths = {name: folder / f"{name.replace(' ', '_')}.parquet" for name in names}
    if not all(p.is_file() for p in paths.values()):
        frames = {f"{s} alone": evaluate_source(s, data, test, max_length) for s in source_names}
        untrained = build_xcross(source_names, xcross_config, head_from)
        encoder = PromptEncoder(untrained.tokenizer, data.domain.titles, max_length, scorer_config_of(untrained).encoding)
        frames[UNTRAINED] = evaluate_scorer(untrained, encoder, test, progress=False)
        frames["text similarity"] = reference_rows(data, test, max_length, seed)["text similarity"]
        for name, frame in frames.items():
            frame.to_parquet(paths[name])
    if ship:
        copy_files_atomic([*paths.values(), folder / RUN_DEFINITION], shipped)
    return {name: pd.read_parquet(path) for name, path in paths.items()}


def references_definition(data: DomainData, source_names: list[str], head_from: int, xcross_config, test: pd.DataFrame,
                          max_length: int = 128, seed: int = 0) -> dict:
    """What the reference rows of a curve depend on: data, candidate lists, source models, the head's
    source, the X-Cross settings of the untrained average, the test users, max_length and seed."""
    return {"kind": "learning-curve references", "domain": data.domain.name, "data_fingerprint": data.domain.fingerprint,
            "candidates_sha256": data.protocol.info["candidates_sha256"], "sources": source_models(source_names),
            "head_from": source_names[head_from], "xcross": xcross_config.to_dict(), "test_users": users_digest(test),
            "max_length": max_length, "seed": seed}


def in_domain_per_user(data: DomainData, test: pd.DataFrame, root: Path, max_length: int = 128, ship: bool = False,
                       output_dir=None) -> dict[str, pd.DataFrame]:
    """{"<target> alone (in-domain)": per-user test metrics} of the target's own source model (trained
    on its whole training split), or {} where the target has none or where it was trained on another
    split (its record's data fingerprint and candidate lists must be this run's: otherwise its
    training users may be these test users); scored once per test-user set and model, then read back
    (from the shipped copy when this outputs folder lacks it)."""
    target = data.domain.name
    if target not in available_sources(output_dir):
        return {}
    trained_on = read_record(target)
    same_split = (trained_on.get("data_fingerprint") == data.domain.fingerprint
                  and trained_on.get("candidates_sha256") == data.protocol.info["candidates_sha256"])
    if not same_split:  # another split (seed, user fraction, data): its training users may be these test users
        print(f"no in-domain row: the {target} source model was trained on other data or another split "
              "(its data fingerprint or candidate lists differ from this run's)")
        return {}
    folder = Path(root) / f"in-domain-{users_digest(test)['sha256']}"
    shipped = shipped_root(root, output_dir) / folder.name
    if not folder.is_dir() and (shipped / RUN_DEFINITION).is_file():
        shutil.copytree(shipped, folder)
    claim_run_folder(folder, {"kind": "learning-curve in-domain reference", "domain": target,
                              "data_fingerprint": data.domain.fingerprint,
                              "candidates_sha256": data.protocol.info["candidates_sha256"],
                              "model": source_models([target])[0], "test_users": users_digest(test),
                              "max_length": max_length})
    path = folder / "in_domain.parquet"
    if not path.is_file():
        evaluate_source(target, data, test, max_length).to_parquet(path)
    if ship:
        copy_files_atomic([path, folder / RUN_DEFINITION], shipped)
    return {IN_DOMAIN.format(target=target): pd.read_parquet(path)}


def point_name(model: str, n_users: int) -> str:
    """X-Cross-head-frozen-n300, LoRA-n300, Pooler+Scorer-n300 (a folder name; its digest follows)."""
    return f"{model.replace(' (head frozen)', '-head-frozen').replace(' + ', '+').replace(' ', '-')}-n{n_users}"


def shipped_root(root: Path, output_dir=None) -> Path:
    """Where finished points are copied for the repository (outputs/reference/learning_curve/<root name>):
    the point records and per-user test metrics, not the weights."""
    return outputs_dir(output_dir) / "reference" / "learning_curve" / Path(root).name


def _point_setup(model: str, data: DomainData, source_names: list[str], head_from: int, size: int | None,
                 xcross_config, xcross_train: TrainConfig, lora_train: TrainConfig, lora_scorer, lora_backbone: str,
                 val: pd.DataFrame):
    """(training users, training settings, what defines the run, its folder name) of a point."""
    if model not in MODELS:
        raise ValueError(f"unknown learning-curve model {model!r}; known: {', '.join(MODELS)}")
    train = seeded_subset(data.frames["train"], size, xcross_train.seed)
    if model == "LoRA":
        config = lora_train
        definition = source_run_definition(data, lora_backbone, lora_scorer, config, train, val)
    else:
        config = replace(xcross_train, train_head=model != "X-Cross (head frozen)")
        kind = "X-Cross" if model.startswith("X-Cross") else model
        definition = xcross_definition(data, source_names, xcross_config if kind == "X-Cross" else None, config, train,
                                       val, head_from, kind)
    return train, config, definition, f"{point_name(model, len(train))}-{definition_digest(definition)}"


def train_point(model: str, data: DomainData, source_names: list[str], head_from: int, size: int | None,
                xcross_config, xcross_train: TrainConfig, lora_train: TrainConfig, lora_scorer, lora_backbone: str,
                val: pd.DataFrame, test: pd.DataFrame, root: Path, command: str = "", progress: bool = True,
                ship: bool = False, output_dir=None, score_test: bool = True) -> dict:
    """Train one point of the curve and return its record; a point finished before (here or in the
    shipped copy) is read back, not trained again. size None: the whole training split.
    ship: also copy the point's record, definition and per-user test metrics to shipped_root.
    score_test False: a search point, chosen among others on validation only; its test users are
    not scored (scored later, without training again, when it is run with score_test True)."""
    train, train_config, definition, name = _point_setup(model, data, source_names, head_from, size, xcross_config,
                                                         xcross_train, lora_train, lora_scorer, lora_backbone, val)
    for base in (Path(root), shipped_root(root, output_dir)):
        if (base / name / POINT).is_file() and not score_test:
            return json.loads((base / name / POINT).read_text())
        if (base / name / POINT).is_file() and (base / name / "test_per_user.parquet").is_file():
            per_user = pd.read_parquet(base / name / "test_per_user.parquet")
            if set(per_user["user"]) == set(test["user"]):
                return json.loads((base / name / POINT).read_text())
    started, commit, started_at = time.perf_counter(), git_commit(), now_utc()
    folder = Path(root) / name
    searched = json.loads((folder / POINT).read_text()) if (folder / POINT).is_file() else None  # trained, not tested
    if model == "LoRA":  # a new adapter on the target; train_source_model draws the same training users by the same seed
        trained, encoder, result, lora_record = train_source_model(
            data, lora_backbone, lora_scorer, train_config, len(train), len(val), folder, command, progress=progress,
            reuse_under=Path(root).parent, val=val)
        assert name.endswith(lora_record["run_digest"]), (name, lora_record["run_digest"])  # what _point_setup defined
        per_user = evaluate_scorer(trained, encoder, test, bf16=result.bf16, progress=False) if score_test else None
    else:
        baseline = build_baseline(model, source_names, head_from) if model == "Pooler + Scorer" else None
        run = run_xcross(data, source_names, None if baseline is not None else xcross_config, train_config, train, val,
                         test if score_test else None, Path(root) / point_name(model, len(train)), head_from,
                         with_untrained=False, progress=progress, model=baseline, kind=definition["kind"],
                         reuse_under=Path(root).parent)  # outputs/xcross: a twin from notebooks 03-05 is not retrained
        assert run.out.name == name, (run.out.name, name)  # the folder is what _point_setup defined
        result, per_user, trained = run.result, run.per_user, run.model
    if per_user is not None:
        per_user.to_parquet(folder / "test_per_user.parquet")
    record = {
        "model": model, "size": len(train), "target": data.domain.name, "sources": source_names,
        "head_from": source_names[head_from], "folder": name, "epochs": train_config.epochs,
        "learning_rate": train_config.learning_rate, "train_head": train_config.train_head,
        "kept_step": result.best_step, "kept_epoch": result.best_epoch,
        "steps": int(result.curve["step"].max()) if len(result.curve) else 0,
        "validation_best": result.best_metric, "select_metric": train_config.select_metric,
        "n_val_users": len(val), "n_test_users": len(test) if score_test else 0, "test_scored": score_test,
        "head_learning_rate": train_config.head_learning_rate, **parameter_columns(parameter_counts(trained)),
        "device": compute_device(), "bf16": bool(result.bf16),
        "train_wall_s": round(result.wall_s, 1), "point_wall_s": round(time.perf_counter() - started, 1),
        "curve": result.curve.to_dict("records"), "validation": result.validation.to_dict("records"),
        "command": command, "commit": commit, "started_at": started_at, "produced_at": now_utc(),
    }
    if searched is not None:  # its training finished in the search; this process only scored the test users
        trained_by = {k: searched[k] for k in ("train_wall_s", "started_at", "commit", "device", "bf16") if k in searched}
        record.update(trained_by, test_scored_at=now_utc(), test_commit=commit)
    write_json_atomic(folder / POINT, record)
    if ship:
        files = ("test_per_user.parquet", RUN_DEFINITION, POINT)[0 if score_test else 1:]
        copy_files_atomic([folder / f for f in files], shipped_root(root, output_dir) / name)
    return record


def finished_points(root: Path, test: pd.DataFrame, output_dir=None) -> list[tuple[dict, pd.DataFrame]]:
    """(record, per-user test metrics) of every finished point under root, or shipped, scored on
    exactly `test`'s users (a point found in both places counts once)."""
    out, seen = [], set()
    for base in (Path(root), shipped_root(root, output_dir)):
        for path in sorted(base.glob(f"*/{POINT}")):
            if path.parent.name in seen or not (path.parent / "test_per_user.parquet").is_file():
                continue
            per_user = pd.read_parquet(path.parent / "test_per_user.parquet")
            if set(per_user["user"]) == set(test["user"]):
                out.append((json.loads(path.read_text()), per_user))
                seen.add(path.parent.name)
    return out


def chosen_on_validation(records: list[dict]) -> dict:
    """{size: record} of the X-Cross variant (head trained or head frozen) kept at each size: the
    higher kept validation score (`validation_best`, in the points' select_metric), the rule written
    down before the curve's runs (docs/results.md); a tie (both kept their start, say) goes to the
    head frozen, the model with fewer trained parameters. A size that lacks a variant the records
    hold at another size is not decided yet (no entry): its one point would win by default. Other
    models' records are passed over."""
    variants = [r for r in records if r["model"] in XCROSS_VARIANTS]
    if len({r["select_metric"] for r in variants}) > 1:
        raise ValueError("X-Cross points kept their states on different validation metrics: "
                         f"{sorted({r['select_metric'] for r in variants})}; no choice between them")
    every_variant = {r["model"] for r in variants}
    variants_at = {size: {r["model"] for r in variants if r["size"] == size} for size in {r["size"] for r in variants}}
    chosen = {}
    for r in sorted(variants, key=lambda r: (r["validation_best"], r["model"] == "X-Cross (head frozen)")):
        if variants_at[r["size"]] == every_variant:
            chosen[r["size"]] = r  # sorted ascending: the last one of a size is kept
    return chosen


def curve_table(points: list[tuple[dict, pd.DataFrame]], references: dict[str, pd.DataFrame],
                metrics: tuple[str, ...] = ("hit@1", "mrr")) -> pd.DataFrame:
    """One row per reference and per point: mean metrics (percent) and, for each point, the
    two-tailed paired t-test p-value against every reference row, per metric (`p <metric> vs <row>`,
    with the difference point - row in percent points beside it, and `mdd <metric> vs <row>`: the
    difference that test detects with 80 % power at alpha 0.05, given the pair's per-user spread).
    On X-Cross rows `chosen on validation` says which variant chosen_on_validation keeps at the size
    (empty where it has not decided: a size without the other variant yet)."""
    rows = [{"model": name, "size": None, **summarize(frame).round(2).to_dict()} for name, frame in references.items()]
    chosen = chosen_on_validation([record for record, _ in points])
    for record, per_user in sorted(points, key=lambda p: (p[0]["model"], p[0]["size"])):
        row = {"model": record["model"], "size": record["size"], **summarize(per_user).round(2).to_dict(),
               "chosen on validation": (chosen[record["size"]] is record  # empty: not decided at this size yet
                                        if record["model"] in XCROSS_VARIANTS and record["size"] in chosen else None)}
        for name, frame in references.items():
            for metric in metrics:
                test = paired_ttest(per_user, frame, metric)
                row[f"{metric} diff vs {name}"] = round(100 * test.mean_difference, 2)
                row[f"p {metric} vs {name}"] = test.p_value
                row[f"mdd {metric} vs {name}"] = round(100 * minimum_detectable_difference(test), 2)
        keep = ("epochs", "learning_rate", "train_head", "kept_step", "steps", "validation_best", "select_metric",
                "n_val_users", "n_test_users", "params_per_layer", "params_without_head", "params_with_head",
                "params_trained", "train_wall_s", "device", "bf16", "folder", "commit")
        rows.append({**row, **{k: record.get(k) for k in keep}})
    table = pd.DataFrame(rows)
    table["size"] = table["size"].astype("Int64")
    return table


def smallest_significant(table: pd.DataFrame, model: str, against: list[str], metric: str = "mrr",
                         alpha: float = 0.05) -> int | None:
    """The smallest size at which `model` is above every row of `against` with p < alpha on `metric`;
    model CHOSEN: the X-Cross rows chosen on validation (one a size)."""
    rows = table[table["chosen on validation"].eq(True) if model == CHOSEN else table["model"] == model].sort_values("size")
    for _, row in rows.iterrows():
        if all(row[f"{metric} diff vs {a}"] > 0 and row[f"p {metric} vs {a}"] < alpha for a in against):
            return int(row["size"])
    return None


def point_records(root: Path, output_dir=None) -> list[tuple[Path, dict]]:
    """(folder, record) of every finished point under root or shipped, tested or not, once each."""
    out, seen = [], set()
    for base in (Path(root), shipped_root(root, output_dir)):
        for path in sorted(base.glob(f"*/{POINT}")):
            if path.parent.name not in seen:
                seen.add(path.parent.name)
                out.append((path.parent, json.loads(path.read_text())))
    return out


def search_table(root: Path, output_dir=None) -> pd.DataFrame:
    """Every point under root (here or shipped), scored on test or not, by its settings and its
    validation curve only (start, best and last, in the selection metric): the record of the search
    that chose each final configuration. No test figure is in it."""
    rows = []
    for folder, r in point_records(root, output_dir):
        xcross = json.loads((folder / RUN_DEFINITION).read_text())["definition"].get("xcross") or {}
        metric, validation = r["select_metric"], r["validation"]
        rows.append({"model": r["model"], "size": r["size"], "learning_rate": r["learning_rate"],
                     "head_learning_rate": r.get("head_learning_rate"),
                     **{k: xcross.get(k) for k in ("lambda1", "lambda2", "top_k_layers", "parametrisation")},
                     "epochs": r["epochs"], "steps": r["steps"],
                     f"validation {metric} at start": validation[0][metric] if validation else None,
                     f"validation {metric} best": r["validation_best"], "kept_step": r["kept_step"],
                     f"validation {metric} last": validation[-1][metric] if validation else None,
                     "n_val_users": r["n_val_users"], "test_scored": r.get("test_scored", True),
                     "train_wall_s": r["train_wall_s"], "device": r.get("device"), "folder": r["folder"]})
    return pd.DataFrame(rows)


def validation_curves(points: list[tuple[dict, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long frames of every point's training loss (model, size, point, search, step, loss) and
    validation points (the same keys, then step, hit@1, mrr, kept), for plotting the curves side by
    side. `point` names the run (its folder), so that two runs at one size, such as the points of a
    validation-only search (`search`: trained with `score_test false`), stay two curves."""
    losses, validations = [], []
    for record, _ in points:
        keys = {"model": record["model"], "size": record["size"],
                "point": record.get("folder", point_name(record["model"], record["size"])),
                "search": record.get("test_scored") is False}
        losses += [{**keys, "step": c["step"], "loss": c["loss"]} for c in record["curve"]]
        validations += [{**keys, "step": v["step"], "hit@1": v["hit@1"], "mrr": v["mrr"],
                         "kept": v["step"] == record["kept_step"]} for v in record["validation"]]
    return pd.DataFrame(losses), pd.DataFrame(validations)
