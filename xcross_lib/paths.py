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
