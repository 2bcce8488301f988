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


ADD_A_DOMAIN = ("To add a domain, make a folder <data dir>/<Name> with " + ", ".join(DOMAIN_FILES)
                + " (python -m xcross_lib.data.make_domain; README, 'Using your own domain').")


def found_domains(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The domains of the data directory: every folder holding the shared format's required files,
    the paper's four first (in Table-1 order), then the others by name. [] if no directory is found."""
    try:
        root = find_data_dir(data_dir)
    except DataError:
        return []
    here = {p.name for p in root.iterdir() if p.is_dir() and all((p / f).is_file() for f in REQUIRED_FILES)}
    return [d for d in DOMAINS if d in here] + sorted(here - set(DOMAINS))


def _known(data_dir) -> list[str]:
    found = found_domains(data_dir)
    return found + [d for d in DOMAINS if d not in found]  # the paper's four are always names (download hint)


def resolve_domain(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Canonical spelling of a domain name (case-insensitive): one of the paper's four or a domain
    folder of the data directory; an unknown name gets the list of domains found and how to add one."""
    if not isinstance(name, str):
        raise ParameterError(f"a domain name must be a string, got {name!r}")
    known = _known(data_dir)
    by_lower = {d.lower(): d for d in known}
    key = name.strip().lower()
    if key in by_lower:
        return by_lower[key]
    close = difflib.get_close_matches(key, list(by_lower), n=1)
    hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
    try:
        where = f"the domains found in {find_data_dir(data_dir)} are {', '.join(found_domains(data_dir)) or 'none'}"
    except DataError:
        where = f"no data directory was found; the paper's domains are {', '.join(DOMAINS)}"
    raise ParameterError(f"unknown domain {name!r}; {where}.{hint} {ADD_A_DOMAIN}")


def resolve_domains(spec: str | Iterable[str], data_dir: str | os.PathLike | None = None) -> list[str]:
    """'all' (every domain of the data directory; the paper's four when none is found), one name, a
    comma-separated string or a list of names -> canonical names, in order."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return found_domains(data_dir) or list(DOMAINS)
        spec = [s for s in spec.split(",") if s.strip()]
    names = [resolve_domain(s, data_dir) for s in spec]
    if not names:
        raise ParameterError("no domain given; name one of " + ", ".join(_known(data_dir)) + " or 'all'")
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
    """A data directory holds at least one domain folder (any name) with a train.json."""
    return path.is_dir() and any((p / "train.json").is_file() for p in path.iterdir() if p.is_dir())


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
        "Fix: pass data_dir=..., set XCROSS_DATA_DIR to a folder holding one folder per domain (Tools/ "
        "Toys/ Sports/ Electronics/, or your own), or download the data on a machine with internet:\n"
        "  python -m xcross_lib.data.download --dest <folder>   (then XCROSS_DATA_DIR=<folder>)"
    )


def domain_dir(domain: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of one domain, checked for the files of the shared format."""
    domain = resolve_domain(domain, data_dir)
    root = find_data_dir(data_dir)
    path = root / domain
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise DataError(
            f"{domain}: {path} lacks {', '.join(missing)}. Fix: download the domain again "
            f"(python -m xcross_lib.data.download --domains {domain} --dest {root})."
        )
    return path
