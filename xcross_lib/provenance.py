"""What produced a result: command, commit, time. Atomic writes so an interrupted run loses nothing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(short: bool = False) -> str:
    """HEAD of the repository, with '+dirty' when tracked files have uncommitted changes."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        commit = run("rev-parse", "--short" if short else "--verify", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(frame: pd.DataFrame, command: str, wall_s: float | None = None) -> pd.DataFrame:
    """The frame with provenance columns: command, commit, produced_at (UTC) and wall_s."""
    out = frame.copy()
    out["command"] = command
    out["commit"] = git_commit()
    out["produced_at"] = now_utc()
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
