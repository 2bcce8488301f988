"""What the source-model and zero-shot notebooks run: train, evaluate, compare with the reference rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .baselines import popularity_scores, random_scores, text_similarity_scores
from .data import load_domain, prepare_protocol
from .data.encoding import PromptEncoder
from .data.protocol import item_popularity, prefix_examples
from .metrics import paired_ttest, per_user_metrics, summarize
from .models import Scorer, ScorerConfig, load_backbone
from .models.scorer import scorer_config_of, set_head_trainable
from .models.source import load_source, locate_sources, save_source
from .paths import outputs_dir, shown_path
from .provenance import (RUN_DEFINITION, adopted_from, as_stored, claim_run_folder, compute_device, copy_files_atomic,
                         definition_digest, differences, git_commit, now_utc, write_csv_atomic, write_json_atomic)
from .training import TrainConfig, evaluate_scorer, train_scorer
from .training.trainer import bf16_available


CHECK_SLICE_USERS = 50


def ship_source(domain: str, output_dir=None) -> Path:
    """Copy a trained source model (adapter, head, record; no checkpoints) to outputs/reference/sources/."""
    import shutil

    from .models.source import portable_adapter_config

    src = outputs_dir(output_dir) / "sources" / domain
    dest = outputs_dir(output_dir) / "reference" / "sources" / domain
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", "source.json"):
        shutil.copy2(src / name, dest / name)
    portable_adapter_config(dest, json.loads((src / "source.json").read_text())["backbone"])
    return dest


def refresh_check_slice(folder: str | Path, data: "DomainData", note: str) -> dict:
    """Score a saved source model's check slice again here (float32) and write it into its record;
    for models trained on another machine (another device or base-weight precision)."""
    from .models.source import SOURCE_FILE

    folder = Path(folder)
    record = json.loads((folder / SOURCE_FILE).read_text())
    check = record["check_slice"]
    frame = data.frames["validation"].set_index("user").loc[check["users"]].reset_index()
    model = load_source(folder)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, check["max_length"], model.config.encoding)
    metrics = evaluate_scorer(model, encoder, frame, bf16=False, progress=False)
    same = float((metrics["rank"].to_numpy() == check["rank"]).mean())
    record["check_slice"] = {**check, "rank": metrics["rank"].tolist(), "note": note,
                             "same_rank_share_vs_training_machine": round(same, 3)}
    write_json_atomic(folder / SOURCE_FILE, record)
    return record


def seeded_subset(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """n rows chosen with a seed (all rows when n is None or too large), in user order."""
    if n is None or n >= len(frame):
        return frame.sort_values("user").reset_index(drop=True)
    return frame.sample(n, random_state=seed).sort_values("user").reset_index(drop=True)


def users_digest(frame: pd.DataFrame) -> dict:
    """How many users a frame holds and a digest of which (sorted ids), for a run's definition."""
    import hashlib

    users = sorted(int(u) for u in frame["user"].unique())
    return {"n": len(users), "sha256": hashlib.sha256(",".join(map(str, users)).encode()).hexdigest()[:12]}


def run_definition(kind: str, data: "DomainData", train_config: TrainConfig, train: pd.DataFrame,
                   val: pd.DataFrame | None, **settings) -> dict:
    """Everything that defines a training run: what is trained (kind and its settings), on which
    data (fingerprint, candidate lists, training and validation users) and how (training settings)."""
    from .training.trainer import NON_DEFINING

    definition = {"kind": kind, "domain": data.domain.name, "data_fingerprint": data.domain.fingerprint,
                  "candidates_sha256": data.protocol.info["candidates_sha256"],
                  "train_users": users_digest(train), "n_train_examples": len(train),
                  "validation_users": users_digest(val) if val is not None else None,
                  "train": {k: v for k, v in train_config.to_dict().items() if k not in NON_DEFINING}, **settings}
    if torch.cuda.is_available():  # training runs there, with bf16 under "auto": never the CPU run of these settings
        definition["device"] = "cuda"
    return definition


def source_run_definition(data: "DomainData", backbone_name: str, scorer_config: ScorerConfig,
                          train_config: TrainConfig, train: pd.DataFrame, val: pd.DataFrame,
                          prefix_min_history: int | None = None) -> dict:
    """What defines a LoRA run on a domain (train_source_model; notebook 04's target LoRA)."""
    return run_definition("source LoRA", data, train_config, train, val, backbone=backbone_name,
                          scorer=scorer_config.to_dict(), prefix_min_history=prefix_min_history)


def source_models(source_names) -> list[dict]:
    """Name, folder and adapter digest of each source model: what a result row scored."""
    from .models.source import source_dir

    return [{"name": str(s), "folder": shown_path(source_dir(s)), "adapter_sha256": _model_digest(s)} for s in source_names]


@dataclass
class DomainData:
    """A domain with its protocol files and the splits' candidate frames."""

    domain: object
    protocol: object
    frames: dict

    @classmethod
    def load(cls, name: str, data_dir=None, seed: int = 0, user_fraction=1.0, output_dir=None) -> "DomainData":
        domain = load_domain(name, data_dir)
        protocol = prepare_protocol(domain, outputs_dir(output_dir) / "data", seed, user_fraction, progress=False)
        all_rows = protocol.candidates()
        frames = {s: all_rows[all_rows["split"] == s].reset_index(drop=True) for s in ("train", "validation", "test")}
        return cls(domain, protocol, frames)


def reference_rows(data: DomainData, test: pd.DataFrame, max_length: int = 256, seed: int = 0,
                   progress: bool = False) -> dict[str, pd.DataFrame]:
    """Per-user metrics of random, popularity and text similarity (untrained MiniLM) on `test`."""
    n_items = 1 + max(data.domain.asins)
    backbone = load_backbone("minilm")
    encoder = PromptEncoder(backbone.tokenizer, data.domain.titles, max_length)
    bf16 = bf16_available(torch.device("cpu"))
    scores = {
        "random": random_scores(test, seed),
        "popularity": popularity_scores(test, data.domain.sequences, data.frames["train"]["user"], n_items),
        "text similarity": text_similarity_scores(backbone.model.eval(), encoder, test, bf16=bf16, progress=progress),
    }
    return {k: per_user_metrics(s, test["target_index"].to_numpy(), test["user"].to_numpy()) for k, s in scores.items()}


def results_table(per_user: dict[str, pd.DataFrame], against: str | None = None,
                  metrics: tuple[str, ...] = ("hit@1", "mrr")) -> pd.DataFrame:
    """Rows of mean metrics (percent); with `against`, the two-tailed paired t-test p-value of
    each row against it, per metric."""
    rows = []
    for name, frame in per_user.items():
        row = {"model": name, **summarize(frame).round(2).to_dict()}
        if against and name != against:
            for metric in metrics:
                row[f"p ({against} vs this, {metric})"] = paired_ttest(per_user[against], frame, metric).p_value
        rows.append(row)
    return pd.DataFrame(rows)


def train_source_model(
    data: DomainData,
    backbone_name: str = "minilm",
    scorer_config: ScorerConfig | None = None,
    train_config: TrainConfig | None = None,
    n_train_users: int | None = None,
    n_val_users: int | None = 300,
    out_dir: str | Path | None = None,
    command: str = "",
    progress: bool = True,
    prefix_min_history: int | None = None,
    reuse_under: str | Path | None = None,
    val: pd.DataFrame | None = None,
):
    """Train one domain's LoRA scorer and save it (adapter, head, record) under out_dir.
    prefix_min_history: also train on every prefix of that many items or more of each training
    user (more examples per user); None trains on one example per user, as evaluated.
    reuse_under: where a finished run of the same definition is looked for (claim_run_folder).
    val: the validation users that choose the kept step (a study's, shared with the models it
    compares); None draws n_val_users of them with the training seed."""
    train_config = train_config or TrainConfig()
    scorer_config = scorer_config or ScorerConfig()
    out_dir = Path(out_dir or outputs_dir() / "sources" / data.domain.name)
    commit, started_at = git_commit(), now_utc()  # the code that trains, not what is checked out at the end
    torch.manual_seed(train_config.seed)
    backbone = load_backbone(backbone_name, seed=train_config.seed)
    model = Scorer(backbone, scorer_config)
    encoder = PromptEncoder(backbone.tokenizer, data.domain.titles, train_config.max_length, scorer_config.encoding)
    train = seeded_subset(data.frames["train"], n_train_users, train_config.seed)
    if prefix_min_history is not None:
        popularity = item_popularity(data.domain.sequences, data.frames["train"]["user"], 1 + max(data.domain.asins))
        train = prefix_examples(data.domain.sequences, train["user"], popularity, train_config.seed,
                                prefix_min_history, len(train["candidates"].iloc[0]))
    if val is None:
        val = seeded_subset(data.frames["validation"], n_val_users, train_config.seed)
    digest = claim_run_folder(out_dir, source_run_definition(data, backbone_name, scorer_config, train_config, train,
                                                             val, prefix_min_history), reuse_under)
    result = train_scorer(model, encoder, train, val, train_config, out_dir / "run", progress=progress)
    # a small slice scored in float32, for tests that check a shipped model against its record
    check = val.head(CHECK_SLICE_USERS)
    check_metrics = evaluate_scorer(model, encoder, check, bf16=False, progress=False)
    record = {
        "domain": data.domain.name,
        "train_config": train_config.to_dict(),
        "n_train_users": int(train["user"].nunique()),
        "n_train_examples": len(train),
        "prefix_min_history": prefix_min_history,
        "n_val_users": len(val),
        "data_fingerprint": data.domain.fingerprint,
        "candidates_sha256": data.protocol.info["candidates_sha256"],
        "run_digest": digest,
        "adopted_from": adopted_from(out_dir),
        "best_epoch": result.best_epoch,
        "best_step": result.best_step,
        "validation_hit1": result.best_hit1,
        "curve": result.curve.to_dict("records"),
        "validation": result.validation.to_dict("records"),
        "wall_s": round(result.wall_s, 1),
        "device": compute_device(),
        "bf16": bool(result.bf16),
        "check_slice": {"split": "validation", "max_length": train_config.max_length,
                        "users": check_metrics["user"].tolist(), "rank": check_metrics["rank"].tolist()},
        "command": command,
        "commit": commit,
        "started_at": started_at,
        "produced_at": now_utc(),
    }
    save_source(model, out_dir, record)
    return model, encoder, result, record


def evaluate_source(source: str | Path, data: DomainData, frame: pd.DataFrame, max_length: int = 256,
                    batch_users: int = 8, progress: bool = False) -> pd.DataFrame:
    """Per-user metrics of a source model (a name, a folder, or a loaded Scorer) on a target's candidate frame."""
    model = source if isinstance(source, Scorer) else load_source(source)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, max_length, model.config.encoding)
    return evaluate_scorer(model, encoder, frame, batch_users=batch_users,
                           bf16=bf16_available(torch.device("cpu")), progress=progress)


REFERENCE_ROWS = ("random", "popularity", "text similarity")


@dataclass
class ZeroShotResults:
    per_user: dict  # (source, target, split) -> per-user metric frame; source may be a reference row

    def long_table(self) -> pd.DataFrame:
        rows = []
        for (s, t, split), frame in self.per_user.items():
            row = {"source": s, "target": t, "split": split, **summarize(frame).round(2).to_dict()}
            if s == t:  # in-domain: paired t-tests against the text-similarity row
                reference = self.per_user.get(("text similarity", t, split))
                for metric in ("hit@1", "mrr"):
                    row[f"p vs text similarity ({metric})"] = (
                        paired_ttest(frame, reference, metric).p_value if reference is not None else float("nan"))
            rows.append(row)
        return pd.DataFrame(rows)

    def matrix(self, split: str = "test", metric: str = "hit@1", references: bool = False) -> pd.DataFrame:
        table = self.long_table()
        table = table[(table["split"] == split) & (references | ~table["source"].isin(REFERENCE_ROWS))]
        return table.pivot(index="source", columns="target", values=metric)

    def in_domain(self, split: str = "test") -> pd.DataFrame:
        """Per target: its own source model against the three reference rows."""
        table = self.long_table()
        table = table[(table["split"] == split) & ((table["source"] == table["target"]) | table["source"].isin(REFERENCE_ROWS))]
        return table.sort_values(["target", "source"]).reset_index(drop=True)

    def top_sources(self, k: int = 2) -> dict[str, tuple[str, ...]]:
        """Per target, the k best other domains by validation Hit@1, a tie broken by validation MRR
        (then by name, so the choice never depends on the order of the rows)."""
        hit, mrr = self.matrix("validation", "hit@1"), self.matrix("validation", "mrr")
        top = {}
        for t in hit.columns:
            others = pd.DataFrame({"hit@1": hit[t], "mrr": mrr[t]}).drop(index=t, errors="ignore").dropna()
            others = others.rename_axis("source").reset_index()
            top[t] = tuple(others.sort_values(["hit@1", "mrr", "source"], ascending=[False, False, True])["source"][:k])
        return top


def _model_digest(source) -> str:
    from .data.protocol import file_sha256
    from .models.source import source_dir

    return file_sha256(source_dir(source) / "adapter_model.safetensors")[:10]


def zero_shot(sources, target_data: dict[str, DomainData], n_test_users: int, n_val_users: int, seed: int,
              max_length: int, out: Path, progress: bool = True, references: bool = True) -> ZeroShotResults:
    """Every source model on every target's seeded test and validation subsets, and (references)
    the three reference rows on each target's test subset. Per-user results are saved as they come
    (out/cache/, named by model digest, target, split, users and seed) and reused when present, so an
    interrupted matrix resumes where it stopped and a retrained model is scored again. The names
    also say the precision (evaluate_source's), so scores made in bf16 are never read as float32."""
    from tqdm.auto import tqdm

    cache = Path(out) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    precision = "bf16" if bf16_available(torch.device("cpu")) else "fp32"
    per_user, loaded = {}, {}
    size = {"test": n_test_users, "validation": n_val_users}
    subsets = {(t, split): seeded_subset(data.frames[split], size[split], seed)
               for t, data in target_data.items() for split in size}
    if references:
        for t, data in tqdm(list(target_data.items()), desc="reference rows", disable=not progress):
            paths = {name: cache / f"{name.replace(' ', '_')}_on_{t}_test_n{n_test_users}_s{seed}_T{max_length}_{precision}.parquet"
                     for name in REFERENCE_ROWS}
            if not all(p.is_file() for p in paths.values()):
                for name, frame in reference_rows(data, subsets[(t, "test")], max_length, seed).items():
                    frame.to_parquet(paths[name])
            for name, path in paths.items():
                per_user[(name, t, "test")] = pd.read_parquet(path)
    jobs = [(s, t, split) for s in sources for t in target_data for split in ("validation", "test")]
    digests = {s: _model_digest(s) for s in sources}
    for source, target, split in tqdm(jobs, desc="zero-shot", disable=not progress):
        path = cache / f"{source}-{digests[source]}_on_{target}_{split}_n{size[split]}_s{seed}_T{max_length}_{precision}.parquet"
        if not path.is_file():
            if source not in loaded:  # one load per source model, not per (target, split)
                loaded = {source: load_source(source)}
            evaluate_source(loaded[source], target_data[target], subsets[(target, split)], max_length).to_parquet(path)
        per_user[(source, target, split)] = pd.read_parquet(path)
    return ZeroShotResults(per_user)


# -- X-Cross ----------------------------------------------------------------------------------------

def resolve_sources(sources, target: str, output_dir=None) -> list[str]:
    """A list of domains, a comma-separated string, or "auto": the top-2 of the zero-shot notebook;
    each bound to its model's folder in the documented order (models.source.source_places)."""
    from .data import resolve_domains

    if isinstance(sources, str) and sources.strip().lower() == "auto":
        path = outputs_dir(output_dir) / "zero_shot" / "top_sources.json"
        if not path.is_file():
            raise FileNotFoundError(f"sources='auto' needs {path}: run notebooks/02_zero_shot.ipynb first, or name the sources")
        return locate_sources(json.loads(path.read_text())[target], output_dir)
    names = resolve_domains(sources)
    if target in names:
        raise ValueError(f"the target {target} cannot be one of its own sources")
    return locate_sources(names, output_dir)


def xcross_root(target: str, source_names: list[str], output_dir=None) -> Path:
    """outputs/xcross/<target>-<sources>-<digest of the source models>: runs over other (retrained)
    source models go elsewhere instead of resuming from results that are no longer theirs."""
    import hashlib

    digest = hashlib.sha256("".join(_model_digest(s) for s in source_names).encode()).hexdigest()[:8]
    return outputs_dir(output_dir) / "xcross" / f"{target}-{'+'.join(source_names)}-{digest}"


def build_xcross(source_names: list[str], xcross_config, head_from: int = 0):
    """X-Cross over freshly loaded source models, on a fresh copy of their backbone."""
    from .models.xcross import XCross

    sources = [load_source(name) for name in source_names]
    return XCross(load_backbone(sources[0].backbone_name), sources, xcross_config, head_from=head_from)


def factor_table(model, encoder: PromptEncoder, frame: pd.DataFrame, batch_users: int = 8) -> pd.DataFrame:
    """Per example, encoder pass, integration point and ordered pair (i, j): alpha_ij and beta_ij
    averaged over the tokens of the example's sequences. Pass 0 is the prompt (pair encoding) or
    the history (separate encoding); pass 1 the candidates (separate encoding)."""
    from .training.evaluate import score_candidates

    rows = []
    model.record = True
    try:
        for start in range(0, len(frame), batch_users):
            sub = frame.iloc[start : start + batch_users]
            model.recorded = []
            score_candidates(model, encoder, sub, batch_users=len(sub), progress=False, cache_items=False)
            for pass_index, points in enumerate(model.recorded):
                for point, (alpha, beta) in points.items():  # (sequences, n, n-1)
                    per = alpha.shape[0] // len(sub)
                    a = alpha.view(len(sub), per, *alpha.shape[1:]).mean(1)  # (examples, n, n-1)
                    b = beta.view(len(sub), per, *beta.shape[1:]).mean(1)
                    n = a.shape[1]
                    for k, user in enumerate(sub["user"]):
                        for i in range(n):
                            for jj, j in enumerate(j for j in range(n) if j != i):
                                rows.append((int(user), pass_index, point, i, j, float(a[k, i, jj]), float(b[k, i, jj])))
    finally:
        model.record, model.recorded = False, []
    return pd.DataFrame(rows, columns=["user", "pass", "point", "i", "j", "alpha", "beta"])


@dataclass
class XCrossRun:
    model: object
    encoder: PromptEncoder
    result: object  # TrainResult
    per_user: pd.DataFrame  # test metrics of the trained model
    untrained: pd.DataFrame | None  # test metrics with every W at zero (the streams' average)
    out: Path


BASELINES = ("LoRA", "Pooler + Scorer", "XLoRA", "MeteoRA")


def parameter_counts(model) -> dict[str, int]:
    """The three honest sizes of a model on the target side, and what this run trains:
    - per_layer: weights added per transformer layer (X-Cross: its integrators of one integrated
      layer; a LoRA: its adapters of one layer; the mixtures: their gate of one layer);
    - without_head: every weight of the method but the pooler and scorer;
    - with_head: the same plus the pooler and scorer (copied from a source or new);
    - trainable: what this run trains (the head counts only when it trains)."""
    counts = dict(model.parameter_counts()) if hasattr(model, "parameter_counts") else {}
    head = sum(p.numel() for p in model.head.parameters()) if hasattr(model, "head") else 0
    if "without_head" not in counts:  # a Scorer: its LoRA adapter (trainable or not) is the method
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        layers = getattr(getattr(model.encoder, "config", None), "num_hidden_layers", 1)
        lora_trains = any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
        counts["without_head"] = lora if lora_trains else 0  # Pooler + Scorer adds no weight besides the head
        counts["per_layer"] = counts["without_head"] // layers
    counts["with_head"] = counts["without_head"] + head
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


PARAMETER_COLUMNS = {"per_layer": "params_per_layer", "without_head": "params_without_head",
                     "with_head": "params_with_head", "trainable": "params_trained"}


def parameter_columns(counts: dict) -> dict:
    """parameter_counts(...) as the columns every result table carries."""
    return {column: counts.get(key) for key, column in PARAMETER_COLUMNS.items()}


def build_baseline(kind: str, source_names: list[str], head_from: int = 0, top_k: int | None = None):
    """A language-model baseline of DESIGN.md section 5 over the same frozen source models
    ("LoRA", the target adapter, is trained by train_source_model instead)."""
    from .models.mixtures import AdapterMixture, head_only

    if kind == "Pooler + Scorer":
        return head_only(load_source(source_names[head_from]))
    if kind in ("XLoRA", "MeteoRA"):
        sources = [load_source(name) for name in source_names]
        return AdapterMixture(load_backbone(sources[0].backbone_name), sources, kind.lower(), top_k, head_from)
    raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")


def xcross_definition(data: DomainData, source_names: list[str], xcross_config, train_config: TrainConfig,
                      train: pd.DataFrame, val: pd.DataFrame, head_from: int = 0, kind: str = "X-Cross",
                      model_settings: dict | None = None, backbone: str | None = None) -> dict:
    """What defines an X-Cross (or baseline) run over source models: run_xcross's folder is
    `<out>-<digest of this>`. backbone None: the sources' own."""
    from .models.source import read_record

    return run_definition(
        kind, data, train_config, train, val, backbone=backbone or read_record(source_names[0])["backbone"],
        sources=source_models(source_names), head_from=source_names[head_from],
        xcross=xcross_config.to_dict() if xcross_config is not None else None, model_settings=model_settings or {})


def run_xcross(data: DomainData, source_names: list[str], xcross_config, train_config: TrainConfig,
               train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame | None, out: Path, head_from: int = 0,
               with_untrained: bool = True, progress: bool = True, model=None, kind: str = "X-Cross",
               model_settings: dict | None = None, reuse_under: str | Path | None = None) -> XCrossRun:
    """Build X-Cross over the sources (or take `model`, e.g. a baseline, with `model_settings`
    saying what defines it), train it on `train`, score `test`.

    The run lives in `<out>-<digest>`, the digest of everything that defines it (run_definition:
    model settings, source model digests, data, users, training settings), so a run with other
    settings never resumes from or overwrites this one; the folder holds run_definition.json and is
    refused for any other definition. An interrupted run resumes from its checkpoint, a finished
    one is not trained again; with reuse_under (outputs/xcross), neither is a run finished in another
    folder with the same definition (claim_run_folder copies its training in; its test users are
    scored again here). Results: test_per_user.parquet (test None: none, validation only), xcross.json."""
    commit, started_at = git_commit(), now_utc()
    model = model if model is not None else build_xcross(source_names, xcross_config, head_from)
    if not train_config.train_head:
        set_head_trainable(model, False)
    definition = xcross_definition(data, source_names, xcross_config, train_config, train, val, head_from, kind,
                                   model_settings, model.backbone_name)
    out = Path(out)
    out = out.with_name(f"{out.name}-{definition_digest(definition)}")
    digest = claim_run_folder(out, definition, reuse_under)
    encoder = PromptEncoder(model.tokenizer, data.domain.titles, train_config.max_length, scorer_config_of(model).encoding)
    untrained = evaluate_scorer(model, encoder, test, progress=False) if with_untrained and test is not None else None
    result = train_scorer(model, encoder, train, val, train_config, out / "run", progress=progress)
    per_user = None
    if test is not None:  # None: a validation-only run (a search point); its test users are not scored
        per_user = evaluate_scorer(model, encoder, test, bf16=result.bf16, progress=False)
        per_user.to_parquet(out / "test_per_user.parquet")
    if untrained is not None:
        untrained.to_parquet(out / "untrained_test_per_user.parquet")
    write_json_atomic(out / "xcross.json", {
        "model": kind, "target": data.domain.name, "sources": source_names, "source_models": definition["sources"],
        "head_from": source_names[head_from], "run_digest": digest, "folder": shown_path(out),
        "adopted_from": adopted_from(out),
        "xcross": definition["xcross"], "model_settings": model_settings or {}, "train_config": train_config.to_dict(),
        "n_train_users": len(train), "n_val_users": len(val), "n_test_users": 0 if test is None else len(test),
        "parameters": parameter_counts(model), "best_step": result.best_step, "best_epoch": result.best_epoch,
        "validation": result.validation.to_dict("records"), "wall_s": round(result.wall_s, 1),
        "device": compute_device(), "bf16": bool(result.bf16),
        "commit": commit, "started_at": started_at, "produced_at": now_utc(),
    })
    return XCrossRun(model, encoder, result, per_user, untrained, out)


SHIPPED_RUN_FILES = ("test_per_user.parquet", "untrained_test_per_user.parquet", RUN_DEFINITION)


def shipped_runs_dir(xcross_dir: Path) -> Path:
    """<outputs>/reference/xcross_runs/ beside <outputs>/xcross/: finished X-Cross runs as committed (no weights)."""
    return Path(xcross_dir).parent / "reference" / "xcross_runs"


def ship_xcross_run(run_out: Path, table: pd.DataFrame, curve: pd.DataFrame) -> Path:
    """Copy a finished run's test table, its record with the loss curve (run.json), its per-user test
    metrics and its definition to <outputs>/reference/xcross_runs/<run folder>/, each file atomically:
    what notebook 04 needs to put the run in Table 2 on a clone that does not hold its weights."""
    run_out = Path(run_out)
    shipped = shipped_runs_dir(run_out.parent) / run_out.name
    record = json.loads((run_out / "xcross.json").read_text())
    write_csv_atomic(table, shipped / "test_results.csv")
    write_json_atomic(shipped / "run.json", {**record, "curve": curve.to_dict("records")})
    copy_files_atomic([run_out / name for name in SHIPPED_RUN_FILES if (run_out / name).is_file()], shipped)
    return shipped


def finished_runs(prefix: Path, train: pd.DataFrame, test: pd.DataFrame, like: dict | None = None,
                  free: tuple[str, ...] = ("xcross",)) -> pd.DataFrame:
    """Finished runs in folders `<prefix>-<digest>` trained on exactly `train`'s users and scored
    on exactly `test`'s, oldest first (columns folder, record). prefix lives in <outputs>/xcross/;
    a run found only as shipped (<outputs>/reference/xcross_runs/, see ship_xcross_run) counts too,
    read from there: its per-user results and record, not its weights, which a clone does not hold.
    like: only runs whose definition equals this one in everything but the keys in `free` (notebook
    04: an X-Cross run of its own training settings, validation users, sources and device, whatever
    its X-Cross settings), so that a table never puts a run of another budget beside its own; the
    runs left out for that are named, with what differs, in `.attrs["other_settings"]`."""
    prefix, rows, seen, others = Path(prefix), [], set(), []
    shipped = shipped_runs_dir(prefix.parent)
    def fixed(definition: dict) -> dict:  # what JSON keeps of the defining keys
        return as_stored({k: v for k, v in definition.items() if k not in free})
    wanted = fixed(like) if like is not None else None
    for base, record_name in ((prefix.parent, "xcross.json"), (shipped, "run.json")):
        for folder in sorted(base.glob(f"{prefix.name}-*")):
            record_path, scores = folder / record_name, folder / "test_per_user.parquet"
            if folder.name in seen or not (record_path.is_file() and scores.is_file()
                                           and (folder / RUN_DEFINITION).is_file()):
                continue
            definition = json.loads((folder / RUN_DEFINITION).read_text())["definition"]
            if not (definition["train_users"] == users_digest(train)
                    and set(pd.read_parquet(scores, columns=["user"])["user"]) == set(test["user"])):
                continue
            differs = differences(fixed(definition), wanted) if wanted is not None else []
            if differs:
                others.append(f"{folder.name} ({'; '.join(differs)})")
                continue
            rows.append({"folder": folder, "record": json.loads(record_path.read_text())})
            seen.add(folder.name)
    frame = pd.DataFrame(rows, columns=["folder", "record"])
    frame = frame.sort_values("record", key=lambda r: r.map(lambda x: x["produced_at"])).reset_index(drop=True)
    frame.attrs["other_settings"] = others
    return frame


@dataclass
class FinishedRun:
    per_user: pd.DataFrame  # test metrics of the trained model
    parameters: dict  # parameter_counts of the model
    wall_s: float  # training time
    kept_step: int | None  # the optimizer step whose state was kept (validation)
    folder: Path  # where its results are: its run folder, or the shipped copy it was read from
    name: str  # the run's name, its definition's digest last (a LoRA's run folder has none)
    untrained: pd.DataFrame | None = None  # X-Cross: test metrics with every W at zero, where scored


def model_definition(kind: str, data: DomainData, source_names: list[str], head_from: int,
                     train_config: TrainConfig, train: pd.DataFrame, val: pd.DataFrame, xcross_config=None,
                     top_k: int | None = None) -> dict:
    """What defines a run of Tables 2 and 4: X-Cross (or an ablation: xcross_config) and the
    mixtures as run_xcross defines them, the target LoRA (the best source's scorer and backbone) as
    train_source_model does. A learning-curve point is the same run where its users and settings are."""
    from .models.source import read_record

    if kind == "LoRA":
        source = read_record(source_names[head_from])
        return source_run_definition(data, source["backbone"], ScorerConfig(**source["scorer"]), train_config, train, val)
    if kind not in ("X-Cross", *BASELINES):
        raise ValueError(f"unknown model {kind!r}; known: X-Cross, {', '.join(BASELINES)}")
    return xcross_definition(data, source_names, xcross_config if kind == "X-Cross" else None, train_config, train,
                             val, head_from, kind, {"top_k": top_k} if kind == "MeteoRA" else {})


def shipped_run(definition: dict, test: pd.DataFrame, output_dir=None, with_untrained: bool = False) -> FinishedRun | None:
    """A finished run committed under outputs/reference/ (xcross_runs/<folder>: notebooks 03-05;
    learning_curve/<curve>/<point>: notebook 11) that `definition` defines exactly and that was scored
    on exactly `test`'s users; None if there is none. Its per-user results, parameter counts and
    training time: what a clone without the run's weights needs to put it in a table.
    with_untrained: only a run that also holds the untrained model's per-user scores (X-Cross's start)."""
    definition = as_stored(definition)
    digest, reference = definition_digest(definition), outputs_dir(output_dir) / "reference"
    for folder in sorted([*reference.glob(f"xcross_runs/*-{digest}"), *reference.glob(f"learning_curve/*/*-{digest}")]):
        scores, stored = folder / "test_per_user.parquet", folder / RUN_DEFINITION
        if not (scores.is_file() and stored.is_file()) or json.loads(stored.read_text())["definition"] != definition:
            continue
        per_user = pd.read_parquet(scores)
        if set(per_user["user"]) != set(test["user"]):
            continue
        untrained = folder / "untrained_test_per_user.parquet"
        if with_untrained and not untrained.is_file():
            continue
        untrained = pd.read_parquet(untrained) if untrained.is_file() else None
        if (folder / "run.json").is_file():
            record = json.loads((folder / "run.json").read_text())
            return FinishedRun(per_user, record["parameters"], record["wall_s"], record.get("best_step"), folder,
                               folder.name, untrained)
        if (folder / "point.json").is_file():  # a learning-curve point: its counts as table columns
            record = json.loads((folder / "point.json").read_text())
            counts = {key: record[column] for key, column in PARAMETER_COLUMNS.items()}
            return FinishedRun(per_user, counts, record["train_wall_s"], record["kept_step"], folder, folder.name,
                               untrained)
    return None


def train_once(kind: str, data: DomainData, source_names: list[str], head_from: int, train_config: TrainConfig,
               train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, out: Path, xcross_config=None,
               top_k: int | None = None, with_untrained: bool = False, command: str = "", ship: bool = False,
               output_dir=None) -> FinishedRun:
    """Train one model of Tables 2 and 4 on `train` and score `test` (kind: "X-Cross" with
    xcross_config, or a baseline of notebook 04), unless a run of the same definition was shipped
    before (shipped_run; with_untrained: one that also holds the untrained scores): then it is read
    back, not trained again. The run's folder is `out`, its digest appended (run_xcross; not for
    LoRA, whose folder is `out`). ship: copy its per-user results, definition and record (run.json)
    to <outputs>/reference/xcross_runs/<out>-<digest> as it finishes, so that a session that stops
    after it keeps it."""
    definition = model_definition(kind, data, source_names, head_from, train_config, train, val, xcross_config, top_k)
    found = shipped_run(definition, test, output_dir, with_untrained)
    if found is not None:
        print(f"{kind}: read from {shown_path(found.folder)} (trained before; this clone need not hold its weights)")
        return found
    out = Path(out)
    if kind == "LoRA":  # a new adapter on the target, the best source's scorer and recipe
        from .models.source import read_record

        source = read_record(source_names[head_from])
        model, encoder, result, record = train_source_model(
            data, source["backbone"], ScorerConfig(**source["scorer"]), train_config, len(train), len(val), out,
            command, reuse_under=out.parent, val=val)
        per_user, untrained = evaluate_scorer(model, encoder, test, bf16=result.bf16, progress=False), None
        per_user.to_parquet(out / "test_per_user.parquet")
        record = {**{k: v for k, v in record.items() if k != "check_slice"}, "model": kind,
                  "parameters": parameter_counts(model)}
        name = f"{out.name}-{record['run_digest']}"
    else:
        model = build_baseline(kind, source_names, head_from, top_k) if kind != "X-Cross" else None
        run = run_xcross(data, source_names, xcross_config if kind == "X-Cross" else None, train_config, train, val,
                         test, out, head_from, with_untrained=with_untrained, model=model, kind=kind,
                         model_settings={"top_k": top_k} if kind == "MeteoRA" else {}, reuse_under=out.parent)
        out, result, per_user, untrained, name = run.out, run.result, run.per_user, run.untrained, run.out.name
        record = {**json.loads((out / "xcross.json").read_text()), "curve": result.curve.to_dict("records")}
    if not name.endswith(definition_digest(definition)):  # what shipped_run looks for is what was trained
        raise RuntimeError(f"{kind}: the run {name} is not the one its definition names ({definition_digest(definition)})")
    if ship:
        shipped = shipped_runs_dir(out.parent) / name
        write_json_atomic(shipped / "run.json", record)
        copy_files_atomic([out / f for f in SHIPPED_RUN_FILES if (out / f).is_file()], shipped)
    return FinishedRun(per_user, record["parameters"], round(result.wall_s, 1), result.best_step, out, name, untrained)


def best_source_index(source_names: list[str], data: DomainData, val: pd.DataFrame, max_length: int) -> tuple[int, dict]:
    """Index of the source with the best validation Hit@1 on the target, and every source's frame."""
    frames = {s: evaluate_source(s, data, val, max_length) for s in source_names}
    best = max(range(len(source_names)), key=lambda i: frames[source_names[i]]["hit@1"].mean())
    return best, frames
