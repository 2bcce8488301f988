"""Make a domain folder of the shared format, named by its folder, from your own files.

Two ways, each a function and a command:

  from Amazon 2018 review and metadata files (JSON lines, plain or gzip; DESIGN.md section 2):
    python -m xcross_lib.data.make_domain amazon --reviews Video_Games.json.gz --meta meta_Video_Games.json.gz \\
        --dest <data dir>/VideoGames
  from a table of interactions (user, item, and a time or order column) and a table of item titles
  (item, title), CSV or parquet; the paper's rules only where asked:
    python -m xcross_lib.data.make_domain table --interactions clicks.csv --titles items.csv \\
        --dest <data dir>/Garden [--k-core 5] [--one-per-day] [--min-items 5 --max-items 15] [--title-words 8]

The folder then holds train.json (every user), an empty test.json, meta_data.json, smap.json and
umap.json; notebook 00 splits its users 3:1:1 and draws the candidate lists like the paper's four.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..errors import DataError, ParameterError
from .raw import build_domain, cut_title, k_core, one_per_day, write_shared_format

__all__ = ["from_amazon", "from_tables", "read_table"]


def from_amazon(reviews: str | os.PathLike, meta: str | os.PathLike, dest: str | os.PathLike, seed: int = 0) -> Path:
    """Amazon 2018 raw files -> a domain folder, through the paper's pipeline (xcross_lib.data.raw)."""
    return build_domain(reviews, meta, dest, seed=seed)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or parquet file (by its suffix), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} cannot be read as {suffix[1:]}: {e}") from None
    raise DataError(f"{path}: unknown table format {suffix!r}. Fix: give a .csv, .csv.gz or .parquet file.")


def _column(frame: pd.DataFrame, name: str, path, what: str) -> pd.Series:
    if name not in frame.columns:
        raise DataError(f"{path}: no column {name!r} ({what}); the columns are {', '.join(map(str, frame.columns))}. "
                        f"Fix: rename it, or name the column with --{what.split()[0]}-column.")
    return frame[name]


def from_tables(
    interactions: str | os.PathLike | pd.DataFrame,
    titles: str | os.PathLike | pd.DataFrame,
    dest: str | os.PathLike,
    *,
    user_column: str = "user",
    item_column: str = "item",
    order_column: str = "time",
    title_column: str = "title",
    k: int | None = None,
    one_per_day_seed: int | None = None,
    min_items: int = 2,
    max_items: int | None = None,
    title_words: int | None = None,
) -> Path:
    """Interactions (user, item, time or order) and titles (item, title) -> a domain folder.

    Steps, each only where asked: drop interactions of items without a title (always: a prompt needs
    one); k-core (k); one interaction per user and day (one_per_day_seed; the order column must be
    unix seconds); users with min_items to max_items unique items; titles cut to title_words words.
    Sequences are in order of the order column (ties keep the file's order)."""
    path_i = interactions if isinstance(interactions, (str, os.PathLike)) else "interactions"
    path_t = titles if isinstance(titles, (str, os.PathLike)) else "titles"
    inter = read_table(interactions) if isinstance(interactions, (str, os.PathLike)) else interactions
    names = read_table(titles) if isinstance(titles, (str, os.PathLike)) else titles
    df = pd.DataFrame({
        "user": _column(inter, user_column, path_i, "user column").astype(str),
        "item": _column(inter, item_column, path_i, "item column").astype(str),
        "time": pd.to_numeric(_column(inter, order_column, path_i, "order column"), errors="coerce"),
    })
    if df["time"].isna().any():
        bad = inter.loc[df["time"].isna(), order_column].iloc[0]
        raise DataError(f"{path_i}: the order column {order_column!r} holds a value that is not a number ({bad!r}). "
                        "Fix: give unix seconds or an integer position per user.")
    title_of = dict(zip(_column(names, item_column, path_t, "item column").astype(str),
                        _column(names, title_column, path_t, "title column")))
    title_of = {i: str(t) for i, t in title_of.items() if isinstance(t, str) and t.strip()}
    df = df[df["item"].isin(title_of.keys())]
    if k:
        df = k_core(df, k)
    if one_per_day_seed is not None:
        df = one_per_day(df, one_per_day_seed)
    df = df.sort_values(["user", "time"], kind="stable")
    unique = df.groupby("user")["item"].transform("nunique")
    keep = unique >= min_items
    if max_items is not None:
        keep &= unique <= max_items
    df = df[keep]
    sequences = {user: list(group["item"]) for user, group in df.groupby("user", sort=True)}
    if not sequences:
        raise DataError(f"no user of {path_i} is left after the rules (titles, k-core {k}, "
                        f"{min_items}-{max_items or 'any'} items). Fix: relax them.")
    used = {i for seq in sequences.values() for i in seq}
    cut = (lambda t: cut_title(t, title_words)) if title_words else (lambda t: t)
    return write_shared_format(dest, sequences, {i: cut(title_of[i]) for i in sorted(used)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcross_lib.data.make_domain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="how", required=True)
    amazon = sub.add_parser("amazon", help="from Amazon 2018 review and metadata files")
    amazon.add_argument("--reviews", required=True)
    amazon.add_argument("--meta", required=True)
    amazon.add_argument("--dest", required=True, help="<data dir>/<DomainName>: the folder's name is the domain's")
    amazon.add_argument("--seed", type=int, default=0)
    table = sub.add_parser("table", help="from a table of interactions and a table of titles (CSV or parquet)")
    table.add_argument("--interactions", required=True)
    table.add_argument("--titles", required=True)
    table.add_argument("--dest", required=True, help="<data dir>/<DomainName>: the folder's name is the domain's")
    table.add_argument("--user-column", default="user")
    table.add_argument("--item-column", default="item")
    table.add_argument("--order-column", default="time", help="unix seconds, or any number that orders a user's items")
    table.add_argument("--title-column", default="title")
    table.add_argument("--k-core", type=int, default=None, help="the paper: 5")
    table.add_argument("--one-per-day", action="store_true", help="one interaction per user and UTC day (seeded)")
    table.add_argument("--seed", type=int, default=0)
    table.add_argument("--min-items", type=int, default=2, help="the paper: 5")
    table.add_argument("--max-items", type=int, default=None, help="the paper: 15")
    table.add_argument("--title-words", type=int, default=None, help="the paper: 8")
    args = parser.parse_args(argv)
    try:
        if args.how == "amazon":
            dest = from_amazon(args.reviews, args.meta, args.dest, args.seed)
        else:
            dest = from_tables(args.interactions, args.titles, args.dest, user_column=args.user_column,
                               item_column=args.item_column, order_column=args.order_column,
                               title_column=args.title_column, k=args.k_core,
                               one_per_day_seed=args.seed if args.one_per_day else None, min_items=args.min_items,
                               max_items=args.max_items, title_words=args.title_words)
    except (DataError, ParameterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import json

    users = len(json.loads((dest / "umap.json").read_text()))
    items = len(json.loads((dest / "smap.json").read_text()))
    print(f"wrote {dest}: {users} users, {items} items; its domain name is {dest.name!r}. "
          f"Next: python -m xcross_lib.run 00_data -p domains {dest.name} -p data_dir {dest.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
