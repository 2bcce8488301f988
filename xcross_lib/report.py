"""Collect every result under outputs/ into the paper's tables, with the paper's figures beside ours.

Our rows keep what produced them (commit, date, budget); the paper's come from
`../shared/reference/` (or $XCROSS_REFERENCE_DIR) where it exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .paths import REPO_ROOT, outputs_dir, shown_path  # noqa: F401 (shown_path: the report notebook uses it)

METRICS = ["hit@1", "hit@3", "hit@10", "mrr"]
# the paper's source pairs (its Table 1, DESIGN.md): a target's Table 2 rows over another pair are named by it
PAPER_SOURCES = {"Tools": "Sports+Electronics", "Toys": "Sports+Electronics", "Sports": "Toys+Electronics",
                 "Electronics": "Tools+Toys"}
ABLATION_NAMES = {"X-Cross": "X-Cross", "X-Cross -layers": "- Layers", "X-Cross -interactions": "- Interactions",
                  "X-Cross -experts": "- Experts"}


def paper_dir() -> Path | None:
    path = Path(os.environ.get("XCROSS_REFERENCE_DIR") or REPO_ROOT.parent / "shared" / "reference")
    return path if (path / "paper_tables.csv").is_file() else None


def paper_tables() -> pd.DataFrame:
    """The paper's Tables 2 and 4 (empty where the reference folder is absent)."""
    d = paper_dir()
    return pd.read_csv(d / "paper_tables.csv") if d else pd.DataFrame(columns=["table", "group", "model", "target", *METRICS])


def paper_table3() -> pd.DataFrame:
    d = paper_dir()
    return pd.read_csv(d / "table3.csv") if d and (d / "table3.csv").is_file() else pd.DataFrame()


def _roots(output_dir=None) -> list[Path]:
    """The outputs folder read; when it is not the repository's outputs/ (the quick pipeline's
    outputs/quick/, $XCROSS_OUTPUTS_DIR), the shipped results of the repository come first."""
    here, shipped = outputs_dir(output_dir), REPO_ROOT / "outputs"
    return [shipped, here] if shipped.resolve() != here.resolve() else [here]


def _read_all(pattern: str, output_dir=None) -> pd.DataFrame:
    """Every CSV matching pattern under the outputs folders of _roots, with `results` (which
    outputs folder) and `file` (the path in it)."""
    frames = [pd.read_csv(f).assign(results=shown_path(root), file=str(f.relative_to(root)))
              for root in _roots(output_dir) for f in sorted(root.glob(pattern))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def our_table2(output_dir=None) -> pd.DataFrame:
    """Our Table 2 rows (test split): each source model zero-shot on each target as '<D>-LoRA',
    the reference rows, and X-Cross (with its untrained average) from the X-Cross tables."""
    rows = []
    matrix = _read_all("reference/zero_shot_matrix.csv", output_dir)
    if len(matrix):
        m = matrix[matrix["split"] == "test"].copy()
        is_reference = m["source"].isin(["random", "popularity", "text similarity"])
        m["model"] = m["source"].where(is_reference, m["source"] + "-LoRA")
        m["group"] = is_reference.map({True: "Reference rows", False: "LoRA Fine-Tuning on Source Domain / Zero-shot on Target Domain"})
        rows.append(m)
    xcross = _read_all("reference/xcross_*.csv", output_dir)
    if len(xcross):
        x = xcross[xcross["model"].isin(["X-Cross", "X-Cross untrained (average)"])].copy()
        x["group"] = "Domain Integration"
        rows.append(x)
    table2 = _read_all("reference/table2_*.csv", output_dir)  # notebook 04: the baselines, X-Cross, sources, references
    if len(table2):  # all its rows: they share one set of test users, which may differ from the matrix's
        b = table2.copy()
        zero_shot = b["model"].str.endswith(" (zero-shot)")
        b["model"] = b["model"].str.replace(" (zero-shot)", "-LoRA", regex=False).replace({"LoRA": "target LoRA"})
        b["group"] = "Domain Integration"
        b.loc[zero_shot, "group"] = "LoRA Fine-Tuning on Source Domain / Zero-shot on Target Domain"
        b.loc[b["model"].isin(["random", "popularity", "text similarity"]), "group"] = "Reference rows"
        if "sources" in b:  # a target over several source pairs: rows of a pair not the paper's say which
            several = b.groupby(["target", "results"])["sources"].transform("nunique") > 1
            other = several & (b["group"] == "Domain Integration") & (b["sources"] != b["target"].map(PAPER_SOURCES))
            b.loc[other, "model"] = b.loc[other, "model"] + " (" + b.loc[other, "sources"] + ")"
        rows.append(b)
    classic = _read_all("reference/classic_*.csv", output_dir)  # notebook 12: SASRec, BERT4Rec, FDSA, S3-Rec
    if len(classic):
        c = classic[classic["model"].isin(["SASRec", "BERT4Rec", "FDSA", "S3Rec"])].copy()
        c["model"] = c["model"].replace({"S3Rec": "S3-Rec"})  # the paper's name
        c["group"] = "Single Domain Recommendation"
        rows.append(c)
    if not rows:
        return pd.DataFrame()
    keep = ["group", "model", "target", *METRICS, "n_users", "results", "backbone", "commit", "produced_at", "budget",
            "command"]
    # where two tables give a model on the same test users, notebook 04's row is shown (one run, one set of
    # users for the whole block), then Table 4's, then the zero-shot matrix's; rows keep their order
    out = pd.concat(rows, ignore_index=True)
    preferred = out["file"].map(lambda f: 0 if "table2_" in str(f) else 1 if "xcross_" in str(f) else 2)
    kept = preferred.sort_values(kind="stable").index
    out = out.loc[kept].drop_duplicates(["model", "target", "n_users", "results"]).sort_index()
    return out[[c for c in keep if c in out.columns]]


def our_table4(output_dir=None) -> pd.DataFrame:
    xcross = _read_all("reference/xcross_*.csv", output_dir)
    if not len(xcross):
        return pd.DataFrame()
    x = xcross[xcross["model"].isin(list(ABLATION_NAMES))].copy()
    x["model"] = x["model"].map(ABLATION_NAMES)
    p_col = "p (X-Cross vs this, hit@1)"
    return x[["model", "target", *METRICS, *([p_col] if p_col in x else []), "n_users", "results",
              *(["backbone"] if "backbone" in x else []), "commit", "produced_at", "budget",
              *(["command"] if "command" in x else [])]]


def beside_paper(ours: pd.DataFrame, table: str, metrics=("hit@1", "mrr")) -> pd.DataFrame:
    """Our rows with the paper's figure of the same model and target beside each metric."""
    if not len(ours):
        return ours
    paper = paper_tables()
    paper = paper[paper["table"] == table][["model", "target", *metrics]]
    merged = ours.merge(paper, on=["model", "target"], how="left", suffixes=("", " (paper)"))
    cols = ["model", "target"] + [c for m in metrics for c in (m, f"{m} (paper)")]
    return merged[cols + [c for c in ours.columns if c not in cols]]


def our_table3(output_dir=None) -> pd.DataFrame:
    limited = _read_all("reference/limited_data_*.csv", output_dir)
    if not len(limited):
        return pd.DataFrame()
    cols = [c for c in limited.columns if c.startswith(("smallest size", "largest_size_significant", "saving_percent",
                                                         "reference (best zero-shot"))
            or c in ("target", "results", "backbone", "commit", "produced_at", "budget")]
    ours = limited[cols].drop_duplicates(["target", "results"])
    paper = paper_table3()
    return ours.merge(paper.add_suffix(" (paper)").rename(columns={"target (paper)": "target"}), on="target", how="left") if len(paper) else ours


def limited_runs(output_dir=None) -> pd.DataFrame:
    """Figure 3's rows (model, size, mean and spread): the committed reference tables, and local
    studies not yet written there."""
    rows = pd.concat([_read_all("reference/limited_data_*.csv", output_dir),
                      _read_all("xcross/*-limited-*/limited_data.csv", output_dir)], ignore_index=True)
    return rows.drop_duplicates(["target", "model", "size", "commit", "produced_at"]) if len(rows) else rows


def learning_curves(output_dir=None) -> pd.DataFrame:
    """The learning-curve tables of notebook 11 (outputs/reference/learning_curve_<target>.csv)."""
    return _read_all("reference/learning_curve_*.csv", output_dir)


def training_curves(output_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training loss and validation points over optimizer steps of every committed learning-curve
    point (`reference/learning_curve/<root>/<point>/point.json`, test scored or not), as two long
    frames with `target`: (target, model, size, step, loss) and (target, model, size, step, hit@1,
    mrr, kept). A point found under both outputs folders counts once, the repository's first."""
    from .learning_curve import validation_curves

    records, seen = [], set()
    for root in _roots(output_dir):
        for path in sorted(root.glob("reference/learning_curve/*/*/point.json")):
            key = (path.parent.parent.name, path.parent.name)
            if key not in seen:
                seen.add(key)
                records.append(json.loads(path.read_text()))
    frames = []
    for record in records:
        losses, validations = validation_curves([(record, None)])
        frames.append((losses.assign(target=record["target"]), validations.assign(target=record["target"])))
    if not frames:
        return pd.DataFrame(), pd.DataFrame()
    return (pd.concat([f[0] for f in frames], ignore_index=True), pd.concat([f[1] for f in frames], ignore_index=True))


def full_rankings(output_dir=None) -> pd.DataFrame:
    """Notebook 12's tables of sampled (30 candidates) and full-ranking metrics per target."""
    return _read_all("reference/full_ranking_*.csv", output_dir)


def order_changes(full: pd.DataFrame) -> pd.DataFrame:
    """Per target: the models in order of sampled MRR and of full-ranking MRR, and the rank
    correlations of the two orders (Krichene and Rendle, KDD 2020: sampled metrics can reverse it)."""
    rows = []
    for (results, target), t in full.groupby(["results", "target"], sort=True):
        rows.append({"target": target, "models": len(t),
                     "order by sampled MRR": " > ".join(t.sort_values("sampled mrr", ascending=False)["model"]),
                     "order by full-ranking MRR": " > ".join(t.sort_values("full mrr", ascending=False)["model"]),
                     "spearman": t["spearman (orders by mrr)"].iloc[0], "kendall": t["kendall (orders by mrr)"].iloc[0],
                     "results": results})
    return pd.DataFrame(rows)


def layer_sweeps(output_dir=None) -> pd.DataFrame:
    return _read_all("xcross/*-layer-sweep.csv", output_dir)


# -- laying tables out for a reader -----------------------------------------------------------------

COUNT_COLUMNS = ("n_users", "size", "users", "items", "interactions", "params_per_layer", "params_without_head",
                 "params_with_head", "params_trained", "trainable_parameters")


def side_by_side(table: pd.DataFrame, metric: str = "hit@1", rows: str = "model") -> pd.DataFrame:
    """One metric: rows are models (in the table's order), columns (target, ours | paper). Where
    several of our runs give the same model and target (different test users), the one on the most
    test users is shown."""
    if not len(table):
        return table
    order = list(dict.fromkeys(table[rows]))
    t = table.sort_values("n_users", ascending=False, kind="stable") if "n_users" in table else table
    t = t.drop_duplicates([rows, "target"])
    parts = {"ours": t.pivot(index=rows, columns="target", values=metric)}
    if f"{metric} (paper)" in t:
        parts["paper"] = t.pivot(index=rows, columns="target", values=f"{metric} (paper)")
    wide = pd.concat(parts, axis=1).swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    wide.columns.names = ["target", metric]
    return wide.loc[[m for m in order if m in wide.index]]


def provenance_line(table: pd.DataFrame) -> str:
    """One line: the commands, commits, dates and test users behind a table of ours."""
    if not len(table):
        return ""
    def short(commit) -> str:
        return str(commit).split()[0][:7] if isinstance(commit, str) and commit else "?"
    commits = sorted({short(c) for c in table.get("commit", pd.Series(dtype=str)).dropna()})
    dates = sorted({str(d)[:10] for d in table.get("produced_at", pd.Series(dtype=str)).dropna()})
    users = (table.dropna(subset=["n_users"]).groupby("target")["n_users"].max().astype(int)
             if "n_users" in table else pd.Series(dtype=int))
    commands = sorted({str(c) for c in table.get("command", pd.Series(dtype=str)).dropna()})
    backbones = sorted({str(b) for b in table.get("backbone", pd.Series(dtype=str)).dropna() if str(b)})
    devices = sorted({str(d) for d in table.get("device", pd.Series(dtype=str)).dropna() if str(d)})
    parts = [f"ours: {', '.join(backbones) or 'backbone not recorded'}",
             "test users " + ", ".join(f"{t} {n:,}" for t, n in users.items()) if len(users) else "",
             f"computed on {', '.join(devices)}" if devices else "",
             f"commit {', '.join(commits)}" if commits else "",
             f"{dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") if dates else "",
             f"{len(commands)} command(s), e.g. `{commands[0]}`" if commands else ""]
    return "; ".join(p for p in parts if p)


def readable(value) -> str:
    """A cell for reading: whole numbers as integers with separators, others to 4 significant digits."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:
            return "–"
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"
    return str(value)


def styled(frame: pd.DataFrame, digits: int = 2):
    """A pandas Styler for reading: counts as integers with thousands separators, other numbers with
    `digits` decimals, p-values in 2 significant digits, missing values as a dash, no index numbers."""
    def fmt_for(col) -> str | None:
        name = col[-1] if isinstance(col, tuple) else col
        name = str(name)
        if any(name == c or name.endswith(c) for c in COUNT_COLUMNS) or "size" in name or name.startswith("n_"):
            return "{:,.0f}"
        if name.startswith(("p ", "p(")):  # p-values
            return "{:.2g}"
        return f"{{:.{digits}f}}"
    numeric = frame.select_dtypes("number").columns
    style = frame.style.format({c: fmt_for(c) for c in numeric}, na_rep="–")
    if not isinstance(frame.index, pd.MultiIndex) and frame.index.name is None and frame.index.equals(pd.RangeIndex(len(frame))):
        style = style.hide(axis="index")
    return style


def plot_beside_paper(table: pd.DataFrame, metric: str = "hit@1", axes=None):
    """Per target, one horizontal bar per model: ours, and the paper's beside it where it has one."""
    import matplotlib.pyplot as plt

    targets = sorted(table["target"].unique())
    if axes is None:
        n_models = table["model"].nunique()
        _, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 0.32 * n_models + 1.6), squeeze=False,
                               sharey=True)
        axes = axes[0]
    models = list(dict.fromkeys(table["model"]))
    for ax, target in zip(axes, targets):
        rows = table[table["target"] == target].drop_duplicates("model").set_index("model").reindex(models)
        y = range(len(models))
        ax.barh([v + 0.2 for v in y], rows[metric], height=0.4, label="ours", color="tab:blue")
        if f"{metric} (paper)" in rows:
            ax.barh([v - 0.2 for v in y], rows[f"{metric} (paper)"], height=0.4, label="paper", color="tab:gray")
        ax.set(title=target, xlabel=f"{metric} (%)", yticks=list(y), yticklabels=models)
        ax.invert_yaxis()
    axes[0].legend(loc="lower right")
    return axes
