"""Table 2's single-domain block: SASRec, BERT4Rec, FDSA and S3-Rec on our protocol, and full ranking.

`train_classic_models` trains each model on a domain's training users (models/classic.py,
training/classic.py) and scores its test users twice: on their stored 30-candidate lists and over
every item of the domain (`full_ranking_per_user`: history items left out, ties against the
target). `classic_table` and `full_ranking_table` put them beside the reference rows and the
domain's own source model. Each model's run lives in its own folder, tied to its definition
(settings, data fingerprint, RecBole version), so a rerun reuses a finished model and never one made
with other settings; where only the committed copy of a run is here (its tables and summary, not
its weights), a rerun reuses that.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .data.encoding import PromptEncoder
from .data.protocol import item_popularity
from .experiments import DomainData, reference_rows
from .metrics import full_ranking_per_user, paired_ttest, summarize
from .models.classic import ATTRIBUTE_SETTINGS, MODELS, ItemCatalogue, full_scores, model_config, title_words
from .models.source import load_source, source_dir
from .paths import REPO_ROOT, outputs_dir, shown_path
from .data.protocol import file_sha256
from .errors import DataError
from .provenance import RUN_DEFINITION, as_stored, claim_run_folder, copy_files_atomic, definition_digest, now_utc, write_json_atomic
from .training.classic import SELECTION, ClassicConfig, sampled_per_user, train_classic
from .training.evaluate import evaluate_scorer, two_tower_full_scores, two_towers
from .training.trainer import bf16_available

SUMMARY_METRICS = ("hit@1", "hit@3", "hit@10", "mrr", "ndcg@10")


def catalogue_items(data: DomainData) -> np.ndarray:
    """The items ranked in full ranking: every item of the domain (ids 0 .. n - 1)."""
    return np.arange(1 + max(data.domain.asins))


def _seen_in_training(data: DomainData) -> set[int]:
    seen = set()
    for u in data.frames["train"]["user"]:
        seen.update(data.domain.sequences[int(u)])
    return seen


def cold_items(data: DomainData) -> dict:
    """How many test targets and candidates are items that no training user has."""
    seen = _seen_in_training(data)
    test = data.frames["test"]
    cands = np.stack(test["candidates"].to_numpy())
    return {
        "test_users": len(test),
        "test targets unseen in training": int((~test["target"].isin(seen)).sum()),
        "test candidate slots unseen in training": int((~np.isin(cands, list(seen))).sum()),
        "candidate slots": int(cands.size),
        "items unseen in training": int(len(catalogue_items(data)) - len(seen)),
        "items": int(len(catalogue_items(data))),
    }


def cold_target_table(data: DomainData, per_user: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """How each model scores the test users whose target no training user has (an ID model holds
    an untrained embedding for it) against the other test users: users, mean rank and MRR (percent)
    of each group on the 30 candidates. per_user: {model: its per-user test rows}."""
    test = data.frames["test"]
    cold_users = set(test.loc[~test["target"].isin(_seen_in_training(data)), "user"])
    rows = []
    for name, frame in per_user.items():
        cold = frame["user"].isin(cold_users)
        rows.append({"model": name, "cold-target users": int(cold.sum()),
                     "mean rank (cold targets)": frame.loc[cold, "rank"].mean(),
                     "MRR (cold targets)": 100 * frame.loc[cold, "mrr"].mean(),
                     "MRR (other users)": 100 * frame.loc[~cold, "mrr"].mean()})
    return pd.DataFrame(rows).round(2)


def classic_catalogue(model: str, data: DomainData, overrides: dict | None = None) -> ItemCatalogue:
    n_items = len(catalogue_items(data))
    table, vocabulary = title_words(data.domain.titles, n_items, **ATTRIBUTE_SETTINGS)
    if model in ("FDSA", "S3Rec") and not vocabulary:
        raise DataError(
            f"{model} reads item attributes, the title words shared by {ATTRIBUTE_SETTINGS['min_items']} or more and "
            f"at most {ATTRIBUTE_SETTINGS['max_share']:.0%} of {data.domain.name}'s titles, and there is none. "
            "Fix: run SASRec and BERT4Rec only (-p models SASRec,BERT4Rec), or give the items longer titles.")
    return ItemCatalogue(n_items, table, len(vocabulary), model_config(model, overrides))


def _frame_scores(full: np.ndarray, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sampled, full-ranking) per-user metrics from (users, items) scores."""
    sampled = sampled_per_user(full, frame)
    ranked = full_ranking_per_user(full, frame["target"].to_numpy(), frame["history"].tolist(), frame["user"].to_numpy())
    return sampled, ranked


def train_classic_models(data: DomainData, models=MODELS, settings: dict | None = None, output_dir=None,
                         progress: bool = True) -> dict:
    """Train (or reuse) each model on `data`; returns {model: {"sampled", "full", "curve", "summary", "folder"}}.
    `settings` are ClassicConfig fields shared by every model (overrides: RecBole hyperparameters)."""
    settings = dict(settings or {})
    root = outputs_dir(output_dir) / "classic" / data.domain.name
    test, val = data.frames["test"], data.frames["validation"]
    out = {}
    for name in models:
        config = ClassicConfig(model=name, **settings)
        definition = {"kind": "classic", "config": config.to_dict(), "selection": SELECTION, "domain": data.domain.name,
                      "data_fingerprint": data.domain.fingerprint, "protocol": {k: data.protocol.info.get(k) for k in ("seed", "user_fraction", "candidates_sha256")}, "recbole": version("recbole"),
                      "torch": torch.__version__}
        if name in ("FDSA", "S3Rec"):  # the models that read item attributes (title words)
            definition["attributes"] = {"source": "title words", **ATTRIBUTE_SETTINGS}
        folder = root / f"{name}-{definition_digest(definition)}"
        if not _finished_classic_run(folder):
            folder = _shipped_classic_run(folder, definition, output_dir) or folder  # committed without weights
        claim_run_folder(folder, definition)
        files = {k: folder / f"{k}.parquet" for k in ("sampled", "full", "curve")}
        if not _finished_classic_run(folder):
            catalogue = classic_catalogue(name, data, config.overrides)
            model, curve, summary = train_classic(config, catalogue, data.domain.sequences,
                                                  data.frames["train"]["user"].to_numpy(), val, progress,
                                                  on_epoch=lambda c: c.to_parquet(folder / "curve_so_far.parquet"))
            scored = time.perf_counter()
            sampled, full = _frame_scores(full_scores(model, test["history"].tolist()), test)
            summary["score_s"] = time.perf_counter() - scored
            summary["produced_at"] = now_utc()
            torch.save(model.state_dict(), folder / "model.pt")
            summary["model_sha256"] = file_sha256(folder / "model.pt")[:10]
            for key, frame in (("sampled", sampled), ("full", full), ("curve", curve)):
                frame.to_parquet(files[key])
            write_json_atomic(folder / "summary.json", summary)
        out[name] = {key: pd.read_parquet(p) for key, p in files.items()}
        out[name]["summary"] = json.loads((folder / "summary.json").read_text())
        out[name]["folder"], out[name]["path"] = shown_path(folder), folder
    return out


def _finished_classic_run(folder: Path) -> bool:
    return all((folder / f"{k}.parquet").is_file() for k in ("sampled", "full", "curve")) and (folder / "summary.json").is_file()


def _shipped_classic_run(folder: Path, definition: dict, output_dir=None) -> Path | None:
    """The committed copy (ship_classic) of the run `folder` would hold: the same folder name under
    <outputs>/reference/classic/<domain>/ or the repository's, finished, and holding exactly
    `definition` (settings, data fingerprint, RecBole and torch versions); None where there is none.
    A clean clone rebuilds notebook 12's tables from it instead of training the model again."""
    definition = as_stored(definition)
    for root in dict.fromkeys([outputs_dir(output_dir) / "reference" / "classic", REPO_ROOT / "outputs" / "reference" / "classic"]):
        shipped = root / folder.parent.name / folder.name
        if (_finished_classic_run(shipped) and (shipped / RUN_DEFINITION).is_file()
                and json.loads((shipped / RUN_DEFINITION).read_text()).get("definition") == definition):
            return shipped
    return None


def reference_and_source_rows(data: DomainData, source: str | None, seed: int = 0, max_length: int = 256,
                              progress: bool = True) -> dict:
    """{name: {"sampled", "full"(or None)}} for random, popularity, text similarity (sampled only)
    and the domain's own source model (both; its folder and adapter digest under "model_files")."""
    test = data.frames["test"]
    items = catalogue_items(data)
    rows = {name: {"sampled": frame, "full": None} for name, frame in reference_rows(data, test, max_length, seed).items()}
    rng = np.random.default_rng([seed, 21])
    full_random = rng.random((len(test), len(items)))
    popularity = item_popularity(data.domain.sequences, data.frames["train"]["user"], len(items)).astype(float)
    rows["random"]["full"] = _frame_scores(full_random, test)[1]
    rows["popularity"]["full"] = _frame_scores(np.broadcast_to(popularity, (len(test), len(items))), test)[1]
    if source is not None:
        model = load_source(source)
        encoder = PromptEncoder(model.tokenizer, data.domain.titles, max_length, model.config.encoding)
        bf16 = bf16_available(torch.device("cpu"))
        if two_towers(model):
            full = two_tower_full_scores(model, encoder, test["history"].tolist(), items, bf16=bf16,
                                         progress=progress, desc=f"{source} source model")
            sampled, ranked = _frame_scores(full, test)
        else:  # a cross-encoder reads each (history, item) pair: every item is out of reach on a CPU
            print(f"{source}: a cross-encoder (encoding 'pair'); scored on the 30 candidates only")
            sampled, ranked = evaluate_scorer(model, encoder, test, bf16=bf16, progress=progress), None
        folder = source_dir(source)
        rows[f"{source} source model"] = {"sampled": sampled, "full": ranked, "model_files": shown_path(folder),
                                          "model_sha256": file_sha256(folder / "adapter_model.safetensors")[:10]}
    return rows


def classic_table(results: dict, rows: dict, against: str, xcross: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sampled metrics (percent) of the classic models and the reference rows, with the two-tailed
    paired t-test p of `against` (the in-domain source model) and of X-Cross (where given) vs each row."""
    per_user = {**{k: v["sampled"] for k, v in rows.items()}, **{k: v["sampled"] for k, v in results.items()}}
    table = []
    for name, frame in per_user.items():
        row = {"model": name, **summarize(frame).round(2).to_dict()}
        for metric in ("hit@1", "mrr"):
            if name != against:
                row[f"p ({against} vs this, {metric})"] = paired_ttest(per_user[against], frame, metric).p_value
            if xcross is not None and frame is not xcross:
                row[f"p (X-Cross vs this, {metric})"] = paired_ttest(xcross, frame, metric).p_value
        info = results.get(name, {})
        if info:
            s = info["summary"]
            row.update({"model_files": info["folder"], "model_sha256": s["model_sha256"], "best_epoch": s["best_epoch"],
                        "epochs_run": s["epochs_run"], "pretrain_epochs_run": s["pretrain_epochs_run"],
                        "stopped": s["stopped"], "train_s": round(s["train_s"], 1), "validation_mrr": round(100 * s["validation_mrr"], 2)})
        elif "model_files" in rows.get(name, {}):
            row.update({"model_files": rows[name]["model_files"], "model_sha256": rows[name]["model_sha256"]})
        table.append(row)
    return pd.DataFrame(table)


def full_ranking_table(results: dict, rows: dict) -> pd.DataFrame:
    """Per model: sampled and full-ranking Hit@10, NDCG@10, MRR side by side (percent), each model's
    place in both orders (by MRR), and the Spearman and Kendall correlations of the two orders."""
    models = {**{k: v for k, v in rows.items() if v.get("full") is not None}, **results}
    table = []
    for name, info in models.items():
        s, f = summarize(info["sampled"]), summarize(info["full"])
        table.append({"model": name, **{f"sampled {m}": round(s[m], 2) for m in ("hit@10", "ndcg@10", "mrr")},
                      **{f"full {m}": round(f[m], 2) for m in ("hit@10", "ndcg@10", "mrr")}, "n_users": int(f["n_users"])})
    table = pd.DataFrame(table)
    table["place (sampled mrr)"] = table["sampled mrr"].rank(ascending=False, method="min").astype(int)
    table["place (full mrr)"] = table["full mrr"].rank(ascending=False, method="min").astype(int)
    table["spearman (orders by mrr)"] = stats.spearmanr(table["sampled mrr"], table["full mrr"]).statistic
    table["kendall (orders by mrr)"] = stats.kendalltau(table["sampled mrr"], table["full mrr"]).statistic
    return table


def largest_xcross_point(data: DomainData, output_dir=None) -> tuple[Path, pd.DataFrame] | None:
    """The X-Cross learning-curve point (notebook 11) of this domain, on these data and candidate
    lists (its definition's fingerprints), at the most training users where the variants have been
    chosen between on validation (learning_curve.chosen_on_validation), that choice, as (its shipped
    folder, its per-user test metrics); None where there is none. The t-test also refuses it unless it scored the same users."""
    from .learning_curve import chosen_on_validation

    roots = dict.fromkeys([outputs_dir(output_dir) / "reference", REPO_ROOT / "outputs" / "reference"])
    points = {}  # point folder name -> its record, with its path: a folder shipped and kept here is one point
    for root in roots:
        for path in sorted(root.glob(f"learning_curve/{data.domain.name}-*-learning-curve/X-Cross*/point.json")):
            definition = json.loads((path.parent / RUN_DEFINITION).read_text()).get("definition", {})
            same_data = (definition.get("data_fingerprint") == data.domain.fingerprint
                         and definition.get("candidates_sha256") == data.protocol.info.get("candidates_sha256"))
            if same_data and (path.parent / "test_per_user.parquet").is_file():
                record = json.loads(path.read_text())
                points.setdefault(path.parent.name, {**record, "size": record.get("size") or 10**9, "path": path.parent})
    chosen = chosen_on_validation(list(points.values()))
    if not chosen:
        return None
    folder = chosen[max(chosen)]["path"]
    return folder, pd.read_parquet(folder / "test_per_user.parquet")


def xcross_point_rows(data: DomainData, folder: Path, output_dir=None, progress: bool = True) -> dict:
    """A learning-curve point's X-Cross as a row of both tables: {"sampled": the point's own per-user
    test metrics, "full": over every item (None, with the reason printed, where it cannot be rebuilt
    here), "model_files", "model_sha256"}.

    The model is rebuilt from the point's definition (source adapters, X-Cross settings, head) with
    the state it kept: none to load where it kept step 0 (the untrained X-Cross), else run/best.pt of
    its training folder, which is not shipped. Two towers: each title and history encoded once. The
    rebuilt model must give the point's own candidate ranks (within float noise), else DataError."""
    from .experiments import build_xcross, source_models
    from .models.xcross import XCrossConfig

    folder = Path(folder)
    point = json.loads((folder / "point.json").read_text())
    definition = json.loads((folder / RUN_DEFINITION).read_text())["definition"]
    sampled = pd.read_parquet(folder / "test_per_user.parquet")
    row = {"sampled": sampled, "full": None, "model_files": shown_path(folder), "model_sha256": ""}
    names = [s["name"] for s in definition["sources"]]
    if [s["adapter_sha256"] for s in source_models(names)] != [s["adapter_sha256"] for s in definition["sources"]]:
        print(f"{folder.name}: its source adapters are not the ones here; not ranked over all items")
        return row
    state = None
    if point["kept_step"]:
        found = [p for base in dict.fromkeys([outputs_dir(output_dir), REPO_ROOT / "outputs"])
                 if (p := base / "xcross" / folder.parent.name / folder.name / "run" / "best.pt").is_file()]
        if not found:
            print(f"{folder.name}: its kept weights (run/best.pt of its training folder) are not on this machine; "
                  "not ranked over all items")
            return row
        state = torch.load(found[0], weights_only=True)
        row["model_sha256"] = file_sha256(found[0])[:10]
    else:
        row["model_sha256"] = "untrained"
    model = build_xcross(names, XCrossConfig(**definition["xcross"]), names.index(definition["head_from"]))
    if state is not None:
        model.load_trainable_state(state)
    if not two_towers(model):
        print(f"{folder.name}: a cross-encoder X-Cross reads each (history, item) pair; not ranked over all items")
        return row
    test = data.frames["test"]
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, definition["train"]["max_length"], "separate")
    full = two_tower_full_scores(model, encoder, test["history"].tolist(), catalogue_items(data),
                                 bf16=bf16_available(torch.device("cpu")), progress=progress, desc=f"X-Cross {folder.name}")
    again, ranked = _frame_scores(full, test)
    both = sampled[["user", "rank"]].merge(again[["user", "rank"]], on="user", suffixes=("_point", "_rebuilt"))
    same = (both["rank_point"] == both["rank_rebuilt"]).mean() if len(both) == len(sampled) == len(test) else 0.0
    mrr_gap = abs(100 * (sampled["mrr"].mean() - again["mrr"].mean()))
    if same < 0.99 or mrr_gap > 0.05:
        raise DataError(f"the X-Cross rebuilt from {shown_path(folder)} does not give the point's own candidate ranks "
                        f"({same:.1%} of {len(test)} test users the same, MRR {mrr_gap:.2f} points apart): its "
                        "source models or weights are not the ones it was trained with")
    row["full"] = ranked
    return row


def ship_classic(results: dict, output_dir=None) -> dict[str, str]:
    """Copy each model's definition, summary, curve and per-user test rows (not its weights, whose
    digest the summary holds) to <outputs>/reference/classic/<domain>/<folder>/, to be committed.
    Returns {model: the shipped folder}, what a committed table names."""
    import shutil

    shipped = {}
    for model, info in results.items():
        folder = Path(info["path"])
        dest = outputs_dir(output_dir) / "reference" / "classic" / folder.parent.name / folder.name
        if dest.resolve() == folder.resolve():  # reused from the committed copy: already shipped
            shipped[model] = shown_path(dest)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("run_definition.json", "summary.json", "curve.parquet", "sampled.parquet", "full.parquet"):
            shutil.copy2(folder / name, dest / name)
        shipped[model] = shown_path(dest)
    return shipped


def ship_search_records(data: DomainData, output_dir=None) -> list[str]:
    """Copy the definition and summary (settings, validation MRR; no test figure, no weights) of every
    finished classic run of this domain on these data to <outputs>/reference/classic/<domain>/<folder>/,
    so that a clean clone's classic_search still sees the settings that lost. A folder holding only
    these two files is a search record: it is never reused as a finished run (that needs the
    per-user rows). Returns the folders newly shipped."""
    shipped = []
    for path in sorted((outputs_dir(output_dir) / "classic" / data.domain.name).glob("*/summary.json")):
        definition = json.loads((path.parent / RUN_DEFINITION).read_text())["definition"]
        dest = outputs_dir(output_dir) / "reference" / "classic" / data.domain.name / path.parent.name
        if not _same_classic_data(definition, data) or (dest / "summary.json").is_file():
            continue
        copy_files_atomic([path.parent / RUN_DEFINITION, path], dest)  # the summary last: it marks a record
        shipped.append(shown_path(dest))
    return shipped


def _same_classic_data(definition: dict, data: DomainData) -> bool:
    return (definition["data_fingerprint"] == data.domain.fingerprint
            and definition["protocol"]["candidates_sha256"] == data.protocol.info.get("candidates_sha256"))


def classic_search(data: DomainData, output_dir=None) -> pd.DataFrame:
    """Every classic model run of this domain on these data and candidates (here or shipped): its
    settings and validation MRR only (no test figure), the best per model marked. The record of the
    search behind notebook 12's settings."""
    roots = dict.fromkeys([outputs_dir(output_dir) / "classic", outputs_dir(output_dir) / "reference" / "classic",
                           REPO_ROOT / "outputs" / "reference" / "classic"])
    rows, seen = [], set()
    for root in roots:
        for path in sorted(root.glob(f"{data.domain.name}/*/summary.json")):
            definition = json.loads((path.parent / RUN_DEFINITION).read_text())["definition"]
            if path.parent.name in seen or not _same_classic_data(definition, data):
                continue
            seen.add(path.parent.name)
            summary, config = json.loads(path.read_text()), definition["config"]
            rows.append({"model": summary["model"], **{k: config[k] for k in ("train_batch_size", "learning_rate",
                                                                                "time_budget_s", "overrides")},
                         "validation_mrr": round(100 * summary["validation_mrr"], 2), "best_epoch": summary["best_epoch"],
                         "epochs_run": summary["epochs_run"], "stopped": summary["stopped"],
                         "train_s": round(summary["train_s"], 1), "folder": path.parent.name})
    table = pd.DataFrame(rows)
    if len(table):
        table["overrides"] = table["overrides"].map(lambda o: json.dumps(o, sort_keys=True) if o else "")
    return _mark_best(table)


def _mark_best(table: pd.DataFrame) -> pd.DataFrame:
    if len(table):
        best = table.groupby("model")["validation_mrr"].transform("max")
        table["best for model (validation)"] = table["validation_mrr"].eq(best)
    return table


def with_earlier_search_rows(search: pd.DataFrame, earlier: pd.DataFrame | None) -> pd.DataFrame:
    """`search` (classic_search, stamped) and the rows of the earlier committed search table whose
    run folder it lacks (a run trained on another machine and never shipped), each with its own
    stamp: rebuilding the table on a clean clone does not drop the settings that lost. The earlier
    rows are kept only when the two tables share a folder: classic_search keeps one data fingerprint
    per table, so a shared run says that the earlier table was made on these data; otherwise they
    are dropped (other data). The best per model is marked again over the union."""
    if earlier is None or not len(earlier) or not len(search) or not set(earlier["folder"]) & set(search["folder"]):
        return search
    kept = earlier[~earlier["folder"].isin(search["folder"])].copy()
    kept["overrides"] = kept["overrides"].astype(object).where(kept["overrides"].notna(), "")  # a CSV reads "" as NaN
    return _mark_best(pd.concat([search, kept], ignore_index=True))


def curves_frame(results: dict) -> pd.DataFrame:
    """Every model's training curve in one frame (model, stage, epoch, train_loss, validation_mrr)."""
    return pd.concat([r["curve"].assign(model=name) for name, r in results.items()], ignore_index=True)
