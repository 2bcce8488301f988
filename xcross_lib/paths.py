"""Where the project's folders are: notebooks/, params/, outputs/."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
ENV_OUTPUTS_DIR = "XCROSS_OUTPUTS_DIR"


def outputs_dir(path: str | os.PathLike | None = None) -> Path:
    """The argument, else $XCROSS_OUTPUTS_DIR, else outputs/ of the repository."""
    if path:
        return Path(path)
    return Path(os.environ.get(ENV_OUTPUTS_DIR) or REPO_ROOT / "outputs")


def shown_path(path: str | os.PathLike) -> str:
    """A path as results and reports print it: relative to the repository where it is inside it or
    beside it ("outputs/quick", "../shared/reference"), so no machine's layout lands in a committed file."""
    resolved, repo = Path(path).resolve(), REPO_ROOT.resolve()
    if resolved.is_relative_to(repo.parent):
        return os.path.relpath(resolved, repo)
    return str(path)
