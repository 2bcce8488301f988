"""Run notebooks with papermill, with parameters checked by name before anything runs.

    python -m xcross_lib.run notebooks/00_data.ipynb --profile cpu -p domains Tools
    python -m xcross_lib.run --pipeline quick --profile cpu

A profile is a flat YAML file in params/ (smoke, cpu, paper): each notebook takes the keys it
has. A key that no notebook has, or a -p name that the notebook lacks, is an error with a
suggestion, where plain papermill would only warn. Executed copies go to outputs/notebooks/.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .checks import check_values
from .errors import ParameterError
from .paths import ENV_OUTPUTS_DIR, NOTEBOOKS_DIR, PARAMS_DIR, REPO_ROOT, outputs_dir
from .provenance import git_commit, now_utc, write_atomic

# The quick pipeline of the README's main command: (notebook, parameters beyond the profile). It shows
# every stage on the shared data in minutes, not a study: small sources trained here, 200 target users,
# 300 test users. It writes under outputs/quick/ ($XCROSS_OUTPUTS_DIR), so its small source models never
# stand in for the shipped ones of outputs/reference/sources/; its report shows the shipped results too.
_QUICK_USERS = {"n_val_users": 100, "n_test_users": 300}
_QUICK_SOURCE = {"encoding": "separate", "learning_rate": 4e-4, "warmup_ratio": 0.05, "batch_size": 8,
                 "train_candidates": 30, "n_train_users": 200, **_QUICK_USERS}
_QUICK_TARGET = {"target": "Tools", "sources": "Sports,Electronics", "n_train_users": 200, **_QUICK_USERS}
PIPELINES: dict[str, list[tuple[str, dict]]] = {
    "quick": [
        ("00_data", {"domains": "Tools,Sports,Electronics"}),
        ("01_source_lora", {"domain": "Sports", **_QUICK_SOURCE}),
        ("01_source_lora", {"domain": "Electronics", **_QUICK_SOURCE}),
        ("02_zero_shot", {"sources": "Sports,Electronics", "targets": "Tools", **_QUICK_USERS, "write_reference": True}),
        ("03_xcross", _QUICK_TARGET),
        ("04_baselines", {**_QUICK_TARGET, "baselines": ["Pooler + Scorer"], "write_reference": True}),
        ("10_report", {}),
    ],
}
# where a pipeline writes, under outputs/ (unless $XCROSS_OUTPUTS_DIR is set)
PIPELINE_OUTPUTS = {"quick": "quick"}


def notebook_path(name: str | os.PathLike) -> Path:
    """'00_data', '00_data.ipynb' or a path -> the notebook file."""
    p = Path(name)
    if p.suffix != ".ipynb":
        p = p.with_suffix(".ipynb")
    if p.is_file():
        return p
    q = NOTEBOOKS_DIR / p.name
    if q.is_file():
        return q
    known = sorted(x.stem for x in NOTEBOOKS_DIR.glob("*.ipynb"))
    close = difflib.get_close_matches(p.stem, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ParameterError(f"no notebook {name!r}; the notebooks are {', '.join(known)}.{hint}")


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict]:
    """{name: papermill's description} of the cell tagged `parameters`."""
    import papermill

    return papermill.inspect_notebook(str(path))


def notebook_defaults(path: str | os.PathLike) -> dict:
    """{name: default value} of the notebook's parameters cell (papermill gives them as source text)."""
    import ast

    out = {}
    for name, info in notebook_parameters(path).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            pass
    return out


def load_profile(name: str | None) -> dict:
    """params/<name>.yaml (or a path) as a flat dict; {} for None."""
    if not name:
        return {}
    path = Path(name)
    if not path.is_file():
        path = PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ParameterError(f"no parameter profile {name!r}; the profiles are {', '.join(known)}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParameterError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ParameterError(f"{path} must be a mapping of parameter names to values")
    every = set().union(*(notebook_parameters(p) for p in NOTEBOOKS_DIR.glob("*.ipynb")))
    for key in values:
        _check_name(key, every, f"{path.name}: no notebook has a parameter")
    return values


def _check_name(name: str, known: set[str] | dict, what: str) -> None:
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ParameterError(f"{what} {name!r}.{hint} Known: {', '.join(sorted(known))}")


def resolve_parameters(notebook: str | os.PathLike, profile: dict, explicit: dict) -> dict:
    """Profile values that the notebook has, then explicit ones, which must all be its own."""
    path = notebook_path(notebook)
    known = notebook_parameters(path)
    for key in explicit:
        _check_name(key, known, f"{path.name} has no parameter")
    params = {k: v for k, v in profile.items() if k in known}
    params.update(explicit)
    defaults = notebook_defaults(path)
    check_values(path.name, params, defaults)
    for key, value in profile_overrides_of_words(params, explicit, defaults).items():
        print(f"[xcross] note: the profile sets {key} = {value!r} over {path.name}'s own default {defaults[key]!r}; "
              f"pass -p {key} {defaults[key]} to keep the notebook's", file=sys.stderr, flush=True)
    return params


def profile_overrides_of_words(params: dict, explicit: dict, defaults: dict) -> dict:
    """Profile values (not given with -p) that replace a notebook default which is a word such as
    "auto" or "latest": a flat profile meant for other notebooks can do that silently (notebook 11's
    epochs "auto" under the cpu profile's epochs 1), so the runner says so."""
    return {k: v for k, v in params.items() if k not in explicit and isinstance(defaults.get(k), str)
            and defaults[k] and not isinstance(v, str) and v != defaults[k]}


def output_path(notebook: Path, explicit: dict, out_dir: Path | None = None) -> Path:
    tag = "-".join(f"{k}-{v}" for k, v in explicit.items() if k != "run_command")
    tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", tag)[:80]
    out_dir = out_dir or outputs_dir() / "notebooks"
    return out_dir / (notebook.stem + (f"-{tag}" if tag else "") + ".ipynb")


class NotebookFailed(RuntimeError):
    """A notebook's cell raised: its whole error message and the executed copy that has the traceback."""

    def __init__(self, notebook: str, executed: Path, message: str):
        super().__init__(message)
        self.notebook, self.executed, self.message = notebook, Path(executed), message


def run_notebook(
    notebook: str | os.PathLike,
    parameters: dict | None = None,
    profile: str | None = None,
    output: str | os.PathLike | None = None,
    command: str | None = None,
    progress: bool = True,
) -> Path:
    """Execute a notebook with checked parameters; returns the executed copy's path.
    A failing notebook raises, and its executed copy keeps the error."""
    import papermill

    path = notebook_path(notebook)
    explicit = dict(parameters or {})
    params = resolve_parameters(path, load_profile(profile), explicit)
    if "run_command" in notebook_parameters(path):
        params["run_command"] = command or "xcross_lib.run_notebook(" + repr(path.name) + ", " + repr(explicit) + ")"
    out = Path(output) if output else output_path(path, explicit)
    out.parent.mkdir(parents=True, exist_ok=True)
    _kernel_sees_this_environment()
    with tempfile.TemporaryDirectory(prefix="xcross-kernel-") as sockets:
        try:
            papermill.execute_notebook(
                str(path),
                str(out),
                parameters=params,
                kernel_name="python3",
                kernel_manager_class=_ipc_kernel_manager(sockets),
                cwd=str(path.parent),
                progress_bar=progress,
                request_save_on_cell_execute=True,
            )
        except papermill.PapermillExecutionError as e:  # the cell's error, whole; the traceback stays in the notebook
            raise NotebookFailed(path.stem, out, f"{e.ename}: {e.evalue}") from None
    export_html(out)
    return out


def export_html(executed: Path) -> Path | None:
    """A notebook whose metadata names `xcross.export_html` (the report) is also written as HTML
    into outputs/ under that name, from its executed copy."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    name = nb.metadata.get("xcross", {}).get("export_html")
    if not name:
        return None
    # a report reads as a report: the outputs without the code or the In/Out prompts (the notebook keeps them)
    html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    path = write_atomic(outputs_dir() / name, html)
    print(f"[xcross] report written to {path}", flush=True)
    return path


def _ipc_kernel_manager(folder: str):
    """A kernel manager that talks to the kernel over Unix sockets in `folder` (a private temporary
    folder) instead of loopback TCP: nothing listens on a port, and the kernel has no reason to warn
    "running over TCP without encryption" into the terminal once per notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**{"transport": "ipc", "ip": os.path.join(folder, "kernel"), **kwargs})

    return IPCKernelManager


def _kernel_sees_this_environment() -> None:
    """The kernel is a subprocess: give it this interpreter first on PATH (the python3 kernelspec
    runs `python`) and this checkout on PYTHONPATH, so it imports the same xcross_lib."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, paths)])


def _check_name_in_steps(explicit: dict, steps: list[tuple[str, dict]]) -> None:
    known = set().union(*(notebook_parameters(notebook_path(name)) for name, _ in steps))
    for key in explicit:
        _check_name(key, known, "no notebook of the pipeline has a parameter")


def _parse_value(text: str):
    """-p values as YAML scalars or lists: 0 -> int, 0.4 and 2e-4 -> float, null -> None, [a, b] -> list.
    (PyYAML reads 2e-4, without a dot, as a string; numbers are tried first.)"""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcross_lib.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", nargs="?", help="notebook name or path, e.g. 00_data")
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), help="run a named sequence of notebooks")
    parser.add_argument("--profile", default=None, help="params/<profile>.yaml: smoke, cpu or paper")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("-o", "--output", default=None, help="executed notebook path (default: outputs/notebooks/)")
    args = parser.parse_args(argv)
    if bool(args.notebook) == bool(args.pipeline):
        parser.error("give a notebook or --pipeline, not both")
    command = "python -m xcross_lib.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    explicit = {k: _parse_value(v) for k, v in args.parameter}
    steps = PIPELINES[args.pipeline] if args.pipeline else [(args.notebook, {})]
    if args.pipeline:  # a -p value goes to the steps that have it; one that no step has is a typo
        try:
            _check_name_in_steps(explicit, steps)
        except ParameterError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.pipeline in PIPELINE_OUTPUTS and not os.environ.get(ENV_OUTPUTS_DIR):
        os.environ[ENV_OUTPUTS_DIR] = str(outputs_dir() / PIPELINE_OUTPUTS[args.pipeline])  # the kernels inherit it
    print(f"[xcross] {now_utc()} commit {git_commit(short=True)}: {command}", flush=True)
    began = time.perf_counter()
    try:
        for name, step_params in steps:
            start = time.perf_counter()
            given = explicit if not args.pipeline else {k: v for k, v in explicit.items() if k in notebook_parameters(notebook_path(name))}
            out = run_notebook(name, {**step_params, **given}, args.profile,
                               args.output if not args.pipeline else None, command)
            print(f"[xcross] {name}: done in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
        if args.pipeline:
            report = outputs_dir() / "report.html"
            print(f"[xcross] pipeline {args.pipeline!r} done in {time.perf_counter() - began:.0f} s; results under "
                  f"{outputs_dir()}" + (f"; the report: {report}" if report.is_file() else ""), flush=True)
    except ParameterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotebookFailed as e:
        print(f"error: {e.notebook} failed: {e.message}\nthe executed notebook with the traceback: {e.executed}",
              file=sys.stderr)
        return 1
    except Exception as e:  # papermill or the kernel failed outside a cell
        print(f"error: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
