"""Domain names and where the data directory is found."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterable

from ..errors import DataError, ParameterError

# The paper's four Amazon 2018 domains, in the order of its Table 1.
DOMAINS = ("Tools", "Toys", "Sports", "Electronics")
# Files of the shared format, per domain folder.
DOMAIN_FILES = ("train.json", "test.json", "meta_data.json", "smap.json", "umap.json")
REQUIRED_FILES = ("train.json", "test.json", "meta_data.json", "smap.json")

DATASET_NAME = "amazon2018-xcross"
ENV_DATA_DIR = "XCROSS_DATA_DIR"
ENV_CACHE_DIR = "XCROSS_CACHE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_domain(name: str) -> str:
    """Canonical spelling of a domain name (case-insensitive); a clear error for an unknown one."""
    if not isinstance(name, str):
        raise ParameterError(f"a domain name must be a string, got {name!r}")
    by_lower = {d.lower(): d for d in DOMAINS}
    key = name.strip().lower()
    if key in by_lower:
        return by_lower[key]
    close = difflib.get_close_matches(key, list(by_lower), n=1)
    hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
    raise ParameterError(f"unknown domain {name!r}; the domains are {', '.join(DOMAINS)}.{hint}")


def resolve_domains(spec: str | Iterable[str]) -> list[str]:
    """'all', one name, a comma-separated string or a list of names -> canonical names, in order."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(DOMAINS)
        spec = [s for s in spec.split(",") if s.strip()]
    names = [resolve_domain(s) for s in spec]
    if not names:
        raise ParameterError("no domain given; name one of " + ", ".join(DOMAINS) + " or 'all'")
    return list(dict.fromkeys(names))


def default_cache_dir() -> Path:
    """Where `download` puts the data unless told otherwise."""
    base = os.environ.get(ENV_CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "xcross"
    )
    return Path(base) / DATASET_NAME


def candidate_data_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places looked at, in order, each with where it came from."""
    if data_dir is not None:
        return [("the data_dir argument", Path(data_dir).expanduser())]
    if os.environ.get(ENV_DATA_DIR):  # a variable that is set is used or refused, never passed over
        return [(f"${ENV_DATA_DIR}", Path(os.environ[ENV_DATA_DIR]).expanduser())]
    places = []
    places.append(("shared/ beside the repository", REPO_ROOT.parent / "shared" / "data" / DATASET_NAME))
    here = Path.cwd().resolve()
    for parent in [here, *here.parents]:
        p = parent.parent / "shared" / "data" / DATASET_NAME
        if p != places[-1][1] and (parent / "xcross_lib").is_dir():
            places.append(("shared/ beside the working directory's repository", p))
            break
    places.append(("the download cache", default_cache_dir()))
    return places


def _has_domains(path: Path) -> bool:
    return path.is_dir() and any((path / d / "train.json").is_file() for d in DOMAINS)


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, then $XCROSS_DATA_DIR, then ../shared/data beside the
    repository, then the download cache. Raises a DataError that lists where it looked."""
    places = candidate_data_dirs(data_dir)
    for _, path in places:
        if _has_domains(path):
            return path
    if len(places) == 1:  # given explicitly: the argument or the variable
        why, path = places[0]
        state = "does not exist" if not path.exists() else "is not a folder" if not path.is_dir() else \
            f"holds no domain folder with train.json (e.g. {path / DOMAINS[0] / 'train.json'})"
        fix = (f"unset {ENV_DATA_DIR} to use ../shared/data beside the repository, or point it at the data folder"
               if why.startswith("$") else
               f"pass the data folder, or None to look in ${ENV_DATA_DIR} and the default places")
        raise DataError(f"{why} is {path}, which {state}. Fix: {fix}; or download the data there on a machine "
                        f"with internet: python -m xcross_lib.data.download --dest {path}")
    looked = "\n".join(f"  - {p} ({why})" for why, p in places)
    raise DataError(
        "no X-Cross data directory found. Looked at:\n"
        f"{looked}\n"
        "Fix: pass data_dir=..., set XCROSS_DATA_DIR to a folder holding Tools/ Toys/ Sports/ "
        "Electronics/, or download the data on a machine with internet:\n"
        "  python -m xcross_lib.data.download --dest <folder>   (then XCROSS_DATA_DIR=<folder>)"
    )


def domain_dir(domain: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of one domain, checked for the files of the shared format."""
    domain = resolve_domain(domain)
    root = find_data_dir(data_dir)
    path = root / domain
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"{domain}: {path} lacks {', '.join(missing)}. Fix: download the domain again "
            f"(python -m xcross_lib.data.download --domains {domain} --dest {root})."
        )
    return path
