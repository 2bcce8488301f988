"""The paper's studies over many runs: Table 3 (limited data) and the section 4.6 regression.

Plain functions over DataFrames, so that a notebook passes its results in and shows what comes out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import paired_ttest


def size_summary(per_user: pd.DataFrame, metric: str = "hit@1") -> pd.DataFrame:
    """Mean, standard deviation and range of the per-run metric (percent) per model and size.
    per_user: one row per (model, size, subset, user) with the metric per user (0..1)."""
    runs = per_user.groupby(["model", "size", "subset"])[metric].mean().mul(100).rename(metric).reset_index()
    return (runs.groupby(["model", "size"])[metric].agg(["mean", "std", "min", "max", "count"])
            .rename(columns={"count": "subsets"}).reset_index())


def table3(per_user: pd.DataFrame, reference: float, model: str = "X-Cross", baseline: str = "LoRA",
           metric: str = "hit@1", alpha: float = 0.05, reference_per_user: pd.DataFrame | None = None
           ) -> tuple[pd.DataFrame, dict]:
    """The paper's Table 3 rule on limited-data results.

    per_user: rows (model, size, subset, user, metric), metric per user in 0..1; reference: the
    best zero-shot source's metric in percent on the same test users.
    Per size, each user's metric is averaged over the subsets and `model` is compared with
    `baseline` by a two-tailed paired t-test over users. Returns the per-size table and:
    - largest_size_significant: the largest size where `model` is better than `baseline` with p < alpha;
    - smallest_size_beating_reference[m]: the smallest size where m's mean exceeds `reference`;
    - saving_percent: 100 * (1 - model's smallest size / baseline's smallest size), the share of
      target data that `model` saves to reach the reference (None when either never does).
    reference_per_user (the best source's per-user results on the same users): each model is also
    tested against it per size (columns `p (<m> vs reference)`), and
    smallest_size_significantly_beating_reference[m] is the smallest size where m is above it with
    p < alpha: the paper's rule compares means only."""
    rows = []
    for size, group in per_user.groupby("size"):
        means = {m: g.groupby("user", as_index=False)[metric].mean() for m, g in group.groupby("model")}
        test = paired_ttest(means[model], means[baseline], metric)
        row = {"size": size, f"{model}": 100 * test.mean_a, f"{baseline}": 100 * test.mean_b,
               "difference": 100 * test.mean_difference, "p": test.p_value,
               f"{model} better (p < {alpha})": bool(test.mean_difference > 0 and test.p_value < alpha)}
        if reference_per_user is not None:
            for m in (model, baseline):
                against = paired_ttest(means[m], reference_per_user, metric)
                row[f"p ({m} vs reference)"] = against.p_value
                row[f"{m} above the reference (p < {alpha})"] = bool(against.mean_difference > 0 and against.p_value < alpha)
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("size").reset_index(drop=True)
    better = table.loc[table[f"{model} better (p < {alpha})"], "size"]
    smallest, significant = {}, {}
    for m in (model, baseline):
        beating = table.loc[table[m] > reference, "size"]
        smallest[m] = int(beating.min()) if len(beating) else None
        if reference_per_user is not None:
            above = table.loc[table[f"{m} above the reference (p < {alpha})"], "size"]
            significant[m] = int(above.min()) if len(above) else None
    saving = (100 * (1 - smallest[model] / smallest[baseline])
              if smallest[model] is not None and smallest[baseline] is not None else None)
    answer = {"largest_size_significant": int(better.max()) if len(better) else None,
              "smallest_size_beating_reference": smallest, "saving_percent": saving, "reference": reference}
    if reference_per_user is not None:
        answer["smallest_size_significantly_beating_reference"] = significant
    return table, answer


def convergence_ols(runs: pd.DataFrame, accuracy: str = "hit@1",
                    predictors: tuple[str, ...] = ("length_mean", "length_std"), fixed_effects: tuple[str, ...] = ()):
    """Section 4.6: OLS of each run's accuracy on the mean and standard deviation of its training
    prompts' lengths (tokens), with optional categorical fixed effects: ("size",) when runs of several
    training sizes are read (accuracy grows with size; lengths that shift with size would take its
    effect), ("model",) when runs of several models are pooled; a column with one level adds no term.
    Returns the fitted statsmodels results (summary(), rsquared, params,
    conf_int(), pvalues)."""
    import statsmodels.formula.api as smf

    missing = [c for c in (accuracy, *predictors, *fixed_effects) if c not in runs.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the runs table; it has {list(runs.columns)}")
    n_terms = len(predictors) + 1 + sum(runs[c].nunique() - 1 for c in fixed_effects)
    if len(runs) <= n_terms:
        raise ValueError(f"{len(runs)} runs cannot fit {n_terms} terms (predictors, fixed effects, intercept)")
    frame = runs.rename(columns={accuracy: "accuracy"})
    terms = [*predictors, *(f"C({c})" for c in fixed_effects)]
    return smf.ols("accuracy ~ " + " + ".join(terms), data=frame).fit()


def prompt_length_stats(lengths: np.ndarray) -> dict:
    """Mean and standard deviation (population) of a run's training prompt lengths."""
    lengths = np.asarray(lengths, dtype=float)
    return {"length_mean": float(lengths.mean()), "length_std": float(lengths.std())}


def prompt_lengths(encoder, frame: pd.DataFrame) -> np.ndarray:
    """Token length of each training example's prompt: the pair prompt with its target (pair
    encoding), or the history text alone (two towers, where the candidates are encoded apart)."""
    if encoder.encoding == "separate":
        budget = encoder.max_length - len(encoder.single_prefix) - len(encoder.single_suffix)
        return np.array([len(encoder.single(encoder.history_ids(h, budget))) for h in frame["history"]])
    return np.array([encoder.prompt_length(h, t) for h, t in zip(frame["history"], frame["target"])])


def shipped_per_user(folder) -> pd.DataFrame:
    """The per-user results of a limited-data study's finished runs, read from the files that
    `limited_data_runs` writes (<model>-size<s>-subset<k>.parquet, in the study's folder or its
    shipped copy): model, size, subset, user, metrics. For `table3` over a study still running."""
    frames = []
    for path in sorted(Path(folder).glob("*-size*-subset*.parquet")):
        name = re.fullmatch(r"(.+)-size(\d+)-subset(\d+)", path.stem)
        if name is None:  # e.g. size3k: a stray file, not a run of this study
            raise ValueError(f"{path} is not a limited-data run's results (<model>-size<s>-subset<k>.parquet, "
                             "s and k whole numbers); move it out of the study's folder")
        model, size, subset = name.groups()
        frames.append(pd.read_parquet(path).assign(model=model.replace("_", " "), size=int(size), subset=int(subset)))
    if not frames:
        raise FileNotFoundError(f"no finished limited-data runs (<model>-size<s>-subset<k>.parquet) in {folder}")
    return pd.concat(frames, ignore_index=True)


def limited_data_runs(data, source_names: list[str], sizes, n_subsets: int, xcross_config, xcross_train,
                      lora_scorer, lora_train, val: pd.DataFrame, test: pd.DataFrame, out, seed: int = 0,
                      models: tuple[str, ...] = ("X-Cross", "LoRA"), head_from: int = 0,
                      lora_backbone: str | None = None, progress: bool = True,
                      reuse_under=None, ship: bool = False, output_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """X-Cross and a target LoRA trained on `n_subsets` seeded random subsets of each training size,
    all scored on the same test users. Subset k of size s is seeded by (seed, s, k) and is the same
    for every model. Each run's per-user results are saved under out/ as it finishes and reused, so
    an interrupted study resumes. Returns (per_user: model, size, subset, user, metrics;
    runs: one row per run with its mean metrics, training prompt-length statistics, wall time (the
    run's here; train_wall_s: its training's, which train_adopted_from names when it was copied from
    a finished twin) and kept step).
    reuse_under: where finished runs of the same definition are looked for (claim_run_folder).
    ship: also copy each finished run's results (not its weights) and the study's definition to
    <outputs>/reference/limited_data/<out's name>-<study digest>/ as it finishes; a clone that lacks
    them under out/ takes them from there when that study's definition is this one, so the study,
    many CPU hours, goes on across sessions."""
    import time
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .experiments import (parameter_columns, parameter_counts, run_xcross, seeded_subset, source_models,
                              train_source_model, users_digest)
    from .metrics import summarize
    from .models.source import read_record
    from .paths import outputs_dir
    from .provenance import RUN_DEFINITION, adopted_from, claim_run_folder, copy_files_atomic
    from .training import evaluate_scorer

    lora_backbone = lora_backbone or read_record(source_names[0])["backbone"]  # the sources' backbone
    out = Path(out)
    # the study's folder holds one result per (model, size, subset): refuse it for other settings
    digest = claim_run_folder(out, {
        "study": "limited data", "target": data.domain.name, "data_fingerprint": data.domain.fingerprint,
        "candidates_sha256": data.protocol.info["candidates_sha256"], "sources": source_models(source_names),
        "head_from": source_names[head_from], "xcross": xcross_config.to_dict(), "xcross_train": xcross_train.to_dict(),
        "lora_backbone": lora_backbone, "lora_scorer": lora_scorer.to_dict(), "lora_train": lora_train.to_dict(),
        "validation_users": users_digest(val), "test_users": users_digest(test), "seed": seed,
        # the target LoRA keeps its step on these validation users, as X-Cross does (each LoRA run
        # once drew its own with its subset's seed: a study of that definition is not this one)
        "lora_validation": "the study's validation users"})
    shipped = outputs_dir(output_dir) / "reference" / "limited_data" / f"{out.name}-{digest}"  # one folder a study
    same_study = ((shipped / RUN_DEFINITION).is_file() and json.loads((shipped / RUN_DEFINITION).read_text())
                  == json.loads((out / RUN_DEFINITION).read_text()))
    per_user, runs = [], []
    jobs = [(m, s, k) for s in sizes for k in range(n_subsets) for m in models]
    for model, size, subset in tqdm(jobs, desc="limited-data runs", disable=not progress):
        name = f"{model.replace(' ', '_')}-size{size}-subset{subset}"
        path, info = out / f"{name}.parquet", out / f"{name}.json"
        if not path.is_file() and same_study and (shipped / path.name).is_file() and (shipped / info.name).is_file():
            copy_files_atomic([shipped / info.name, shipped / path.name], out)  # results last: the run counts when whole
        subset_seed = int(np.random.default_rng([seed, size, subset]).integers(2**31))
        train = seeded_subset(data.frames["train"], size, subset_seed)  # what train_source_model draws for LoRA
        if not path.is_file():
            started = time.perf_counter()
            if model == "X-Cross":
                run = run_xcross(data, source_names, xcross_config, xcross_train, train, val, test, out / "runs" / name,
                                 head_from, with_untrained=False, progress=False, reuse_under=reuse_under)
                frame, encoder, trained, result, folder = run.per_user, run.encoder, run.model, run.result, run.out
            elif model == "LoRA":  # a new adapter on the target; train_source_model draws the same subset by this seed
                folder = out / "runs" / name
                scorer, encoder, result, _ = train_source_model(
                    data, lora_backbone, lora_scorer, replace(lora_train, seed=subset_seed), size, len(val),
                    folder, progress=False, reuse_under=reuse_under, val=val)
                frame, trained = evaluate_scorer(scorer, encoder, test, bf16=result.bf16, progress=False), scorer
            else:
                raise ValueError(f"unknown model {model!r}; known: X-Cross, LoRA")
            lengths = prompt_lengths(encoder, train)
            frame.to_parquet(path)
            adopted = adopted_from(folder)  # training copied from a finished twin: wall_s is then mostly scoring
            info.write_text(json.dumps({"wall_s": round(time.perf_counter() - started, 1),
                                        "train_wall_s": round(result.wall_s, 1), "kept_step": result.best_step,
                                        "train_adopted_from": adopted["folder"] if adopted else None,
                                        **prompt_length_stats(lengths), **parameter_columns(parameter_counts(trained))}))
            if ship:
                copy_files_atomic([out / RUN_DEFINITION, info, path], shipped)
        frame = pd.read_parquet(path)
        extra = json.loads(info.read_text())
        per_user.append(frame.assign(model=model, size=size, subset=subset))
        runs.append({"model": model, "size": size, "subset": subset, **summarize(frame).round(3).to_dict(), **extra})
    return pd.concat(per_user, ignore_index=True), pd.DataFrame(runs)
