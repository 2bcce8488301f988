"""What produced a result: command, commit, time. Atomic writes so an interrupted run loses nothing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from .errors import RunMismatchError
from .paths import shown_path

RUN_DEFINITION = "run_definition.json"

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(short: bool = False) -> str:
    """HEAD of the repository, with '+dirty' when tracked files outside outputs/ have uncommitted
    changes (a grid's runs rewrite committed result tables there; that is not other code), as it was
    when this process first asked: a process runs the code it imported, not a later checkout (a run
    that spans a commit would otherwise name the newer one)."""
    if short not in _COMMIT_AT_START:
        _COMMIT_AT_START[short] = checkout_commit(short)
    return _COMMIT_AT_START[short]


def checkout_commit(short: bool = False) -> str:
    """HEAD of the repository now (with '+dirty'): what a process started now would run. In a copy
    without git, $XCROSS_COMMIT (set by whoever copied it), else "unknown"."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        commit = run("rev-parse", "--short" if short else "--verify", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)outputs")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # a copy without .git (a lent GPU machine)
        return os.environ.get("XCROSS_COMMIT") or "unknown"


_COMMIT_AT_START: dict[bool, str] = {}
git_commit(), git_commit(short=True)  # at import: before any later change to the checkout


def compute_device() -> str:
    """Where torch computes here, named for a result row: the GPU's name, else "cpu"."""
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(frame: pd.DataFrame, command: str, wall_s: float | None = None, commit: str | None = None) -> pd.DataFrame:
    """The frame with provenance columns: command, commit (the code that produced it: given, or
    the checkout now), produced_at (UTC), device (where it computed, unless the frame says) and wall_s."""
    out = frame.copy()
    out["command"] = command
    out["commit"] = commit or git_commit()
    out["produced_at"] = now_utc()
    if "device" not in out:
        out["device"] = compute_device()
    if wall_s is not None:
        out["wall_s"] = round(float(wall_s), 1)
    return out


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(path, frame.to_csv(index=False))


def copy_files_atomic(files: list[Path], folder: str | os.PathLike) -> None:
    """Copy files into folder (a shipped place under outputs/reference/, say), each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file in map(Path, files):
        shutil.copyfile(file, folder / f".{file.name}.tmp")
        os.replace(folder / f".{file.name}.tmp", folder / file.name)


def replace_rows_csv(frame: pd.DataFrame, path: str | os.PathLike, key: str) -> Path:
    """Write frame's rows into the CSV at path in place of the rows there with the same `key` values;
    rows with other values stay, first (Table 2 over several source pairs of one target: key "sources")."""
    path = Path(path)
    if key not in frame.columns:
        raise ValueError(f"the rows to write have no column {key!r}")
    if path.is_file():
        kept = pd.read_csv(path)
        if key not in kept.columns:
            raise ValueError(f"{path} has no column {key!r}: it was not written by rows keyed on it; move it away first")
        frame = pd.concat([kept[~kept[key].isin(frame[key])], frame], ignore_index=True)
    return write_csv_atomic(frame, path)


def _flat(obj, prefix: str = "") -> dict:
    """{"a.b": value} of nested dicts, for naming what differs."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def differences(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for each (nested, dotted) setting in which two run definitions differ."""
    a, b = _flat(old), _flat(new)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def as_stored(definition: dict) -> dict:
    """A run definition as run_definition.json keeps it (JSON types, sorted keys): what a stored one is compared with."""
    return json.loads(json.dumps(definition, sort_keys=True, default=str))


def definition_digest(definition: dict) -> str:
    """A short SHA-256 of a run's definition (JSON, sorted keys): the same settings give the same digest."""
    import hashlib

    return hashlib.sha256(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:10]


ADOPTED = "adopted_from.json"


def claim_run_folder(folder: str | os.PathLike, definition: dict, reuse_under: str | os.PathLike | None = None) -> str:
    """Tie `folder` to the run that `definition` describes (everything that defines it: model
    settings, backbone, source model digests, data fingerprint, users, training settings).
    A new folder gets run_definition.json; a folder that holds another definition is refused with
    an error naming the settings that differ. Returns the definition's digest.

    reuse_under: a new folder first looks there (recursively) for a finished run of the same
    definition, e.g. the learning curve's 3,000-user point for notebook 03 at 3,000 users, and copies
    its training (`run/`: checkpoint, kept weights, curves) in, so training resumes at its end instead
    of being repeated; adopted_from.json names the folder it came from (finished_twin)."""
    folder = Path(folder)
    definition = as_stored(definition)
    digest = definition_digest(definition)
    path = folder / RUN_DEFINITION
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("definition") != definition:
            changed = differences(old.get("definition", {}), definition)
            raise RunMismatchError(
                f"{folder} holds a run made with other settings ({'; '.join(changed[:8])}"
                f"{'; ...' if len(changed) > 8 else ''}). Its results are not this run's: choose another "
                "output folder, or remove this one to run again.")
        return digest
    twin = finished_twin(reuse_under, definition, folder) if reuse_under is not None else None
    if twin is not None and not (folder / "run").exists():
        partial = folder / "run.adopting"  # renamed when whole: an interrupted copy is never resumed from
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(twin / "run", partial)
        partial.rename(folder / "run")
        write_json_atomic(folder / ADOPTED, {"folder": shown_path(twin), "digest": digest, "adopted_at": now_utc()})
    write_json_atomic(path, {"digest": digest, "definition": definition})
    return digest


def adopted_from(folder: str | os.PathLike) -> dict | None:
    """Where a run's training was copied from (claim_run_folder's reuse_under), or None."""
    path = Path(folder) / ADOPTED
    return json.loads(path.read_text()) if path.is_file() else None


def finished_twin(under: str | os.PathLike, definition: dict, besides: str | os.PathLike | None = None) -> Path | None:
    """A folder under `under` (recursively; not `besides`) whose run_definition.json holds exactly
    `definition` and whose training finished (run/curve.json is written at its end); None if none.
    A twin trains the same model: the definition holds every setting, the data and the users."""
    definition = as_stored(definition)
    besides = Path(besides).resolve() if besides is not None else None
    for path in sorted(Path(under).rglob(RUN_DEFINITION)):
        folder = path.parent
        if folder.resolve() == besides or not (folder / "run" / "curve.json").is_file():
            continue
        if json.loads(path.read_text()).get("definition") == definition:
            return folder
    return None
