"""Download the four domains from their public source, with SHA-256 checks and atomic writes.

Source: the GitHub repository guy-hadad/RecFormer at a fixed commit (DESIGN.md section 2).
A file already present with the right checksum is not fetched again. Run on a machine with
internet:  python -m xcross_lib.data.download --dest ~/data/amazon2018-xcross
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

from tqdm.auto import tqdm

from ..errors import DataError, ParameterError
from .paths import DOMAIN_FILES, default_cache_dir, resolve_domains
from .protocol import file_sha256

SOURCE_COMMIT = "b70c594e3fbc88c34a9a25538edc32197fe98f20"
SOURCE_URL = f"https://raw.githubusercontent.com/guy-hadad/RecFormer/{SOURCE_COMMIT}"


def parse_sums(text: str) -> dict[str, str]:
    """Lines of `sha256sum` output -> {relative path: hex digest}."""
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def shipped_sums() -> dict[str, str]:
    return parse_sums(resources.files("xcross_lib.data").joinpath("SHA256SUMS").read_text())


def _fetch(url: str, dest: Path, expected: str, timeout: float) -> None:
    """Stream url into dest.part while hashing; rename into place only if the digest matches."""
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.parent.name + "/" + dest.name, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {e}. Fix: check the network, or copy the files by hand.") from None
    if h.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {expected}. Nothing was written.")
    os.replace(tmp, dest)


def download(
    domains: str | Iterable[str] = "all",
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = SOURCE_URL,
    checksums: Mapping[str, str] | None = None,
    files: Iterable[str] = DOMAIN_FILES,
    timeout: float = 60.0,
) -> Path:
    """Fetch `<base_url>/<Domain>/<file>` for each domain into `dest/<Domain>/<file>`.

    Every file is checked against its SHA-256 (the project's SHA256SUMS unless `checksums` is
    given) before it is moved into place; files already there with the right digest are kept.
    Returns dest.
    """
    dest = Path(dest) if dest is not None else default_cache_dir()
    sums = dict(checksums) if checksums is not None else shipped_sums()
    wanted = [(d, f) for d in resolve_domains(domains) for f in files]
    for domain, name in tqdm(wanted, desc="download", unit="file"):
        key = f"{domain}/{name}"
        if key not in sums:
            raise DataError(f"no checksum known for {key}; refusing to download it unchecked.")
        target = dest / domain / name
        if target.is_file() and file_sha256(target) == sums[key]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch(f"{base_url.rstrip('/')}/{domain}/{name}", target, sums[key], timeout)
    return dest


def verify(data_dir: str | os.PathLike, domains: str | Iterable[str] = "all") -> dict[str, bool]:
    """{file: checksum matches} for the shipped checksums of the given domains."""
    sums = shipped_sums()
    root = Path(data_dir)
    return {
        key: (root / key).is_file() and file_sha256(root / key) == digest
        for key, digest in sums.items()
        if key.split("/")[0] in resolve_domains(domains)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", default="all", help="'all' or a comma-separated list, e.g. Tools,Sports")
    parser.add_argument("--dest", default=None, help=f"target folder (default: {default_cache_dir()})")
    parser.add_argument("--base-url", default=SOURCE_URL)
    args = parser.parse_args(argv)
    try:
        dest = download(args.domains, args.dest, base_url=args.base_url)
    except (DataError, ParameterError) as e:  # no network, a checksum mismatch, an unknown domain: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"data in {dest}; use it with XCROSS_DATA_DIR={dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
