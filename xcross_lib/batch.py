"""A study grid through papermill: per domain, per seed, per size, several notebooks at once.

    python -m xcross_lib.batch params/grids/sources.yaml --jobs 2
    python -m xcross_lib.batch params/grids/sources.yaml --dry-run     # list the runs and what is done

A grid file names a profile and a list of notebook grids; each grid is the product of its lists:

    name: sources            # the ledger is outputs/batch/<name>.jsonl
    profile: cpu
    runs:
      - notebook: 01_source_lora
        grid: {domain: [Tools, Toys, Sports, Electronics]}
        fixed: {n_train_users: 3000}

Every run's parameters are checked by name and value before anything runs. Each run executes in
its own process (`python -m xcross_lib.run`), its executed notebook going to
outputs/notebooks/batch/; a failed run keeps its notebook with the traceback and does not stop the
others, and its whole error message is printed. A finished run is appended to the ledger as one
JSON line (one write under a lock, on a line of its own whatever the file ends with), so an
interrupted grid loses nothing that finished, and a run whose line says "ok" is skipped the next
time; failed runs are tried again. A run that writes to outputs/reference/ (write_reference: true)
is also recorded in the shipped ledger outputs/reference/batch/<name>.jsonl, which is committed with
its tables: a fresh clone skips what an earlier session's grid finished and shipped.

The runner owns its runs. A run is claimed by an exclusive lock on
outputs/batch/<name>.claims/<key>.lock, held by the runner and the run's process; the system drops
it when both are gone, so a dead owner's claim never holds. A second runner on the same grid skips
runs that are claimed or finished. A runner that is stopped (Ctrl-C, SIGTERM, or killed outright)
ends its runs: each run's process gets SIGTERM when the runner dies, and its kernel follows it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ParameterError
from .paths import NOTEBOOKS_DIR, REPO_ROOT, outputs_dir, shown_path
from .provenance import checkout_commit, now_utc
from .run import load_profile, notebook_path, resolve_parameters


@dataclass
class Run:
    notebook: str
    parameters: dict = field(default_factory=dict)
    varying: tuple = ()  # the grid's names: they name the run

    @property
    def key(self) -> str:
        """notebook-name=value-...-<hash of all parameters>: readable, and unique for the parameters."""
        text = json.dumps([self.notebook, self.parameters], sort_keys=True)
        tag = "-".join(f"{k}={self.parameters[k]}" for k in self.varying)
        tag = "".join(c if c.isalnum() or c in "=.-_" else "_" for c in tag)[:60]
        return f"{Path(self.notebook).stem}-{tag}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def load_grid(path: str | os.PathLike) -> tuple[str, str | None, list[Run]]:
    """(name, profile, runs) of a grid file, every run's parameters checked against its notebook."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"no grid file {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParameterError(f"{path} is not valid YAML: {e}") from None
    unknown = set(spec) - {"name", "profile", "runs"}
    if unknown or not isinstance(spec.get("runs"), list):
        raise ParameterError(f"{path}: a grid has name, profile and a list 'runs' (unknown keys: {sorted(unknown)})")
    profile = spec.get("profile")
    profile_values = load_profile(profile)
    runs = []
    for entry in spec["runs"]:
        bad = set(entry) - {"notebook", "grid", "fixed"}
        if bad or "notebook" not in entry:
            raise ParameterError(f"{path}: each run has notebook, grid and fixed (unknown keys: {sorted(bad)})")
        grid, fixed = entry.get("grid") or {}, entry.get("fixed") or {}
        names = list(grid)
        for values in itertools.product(*(v if isinstance(v, list) else [v] for v in grid.values())):
            params = {**fixed, **dict(zip(names, values))}
            resolve_parameters(entry["notebook"], profile_values, params)  # raises on a misspelt name or a bad value
            notebook = notebook_path(entry["notebook"])  # one of notebooks/ by its name, another by its path
            notebook = notebook.stem if notebook.resolve().parent == NOTEBOOKS_DIR.resolve() else str(notebook.resolve())
            runs.append(Run(notebook, params, tuple(names)))
    return spec.get("name", path.stem), profile, runs


class Ledger:
    """outputs/batch/<name>.jsonl: one line per finished run, appended whole under a lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write is ignored
                continue
        return out

    def done(self) -> set[str]:
        return {r["key"] for r in self.records() if r.get("status") == "ok"}

    def append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        with self._lock, open(self.path, "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0, os.SEEK_END)
            if f.tell():  # a line cut by a crash has no newline: start this record on a line of its own
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            fcntl.flock(f, fcntl.LOCK_UN)


def grid_ledgers(root: Path, name: str) -> tuple[Ledger, Ledger]:
    """(this outputs folder's ledger, the shipped one under outputs/reference/batch/) of grid `name`."""
    return Ledger(root / "batch" / f"{name}.jsonl"), Ledger(root / "reference" / "batch" / f"{name}.jsonl")


def done_keys(root: Path, name: str) -> set[str]:
    """Keys of the runs finished here or shipped (a committed run of write_reference)."""
    local, shipped = grid_ledgers(root, name)
    return local.done() | (shipped.done() if shipped.path.is_file() else set())


def _cli_value(value) -> str:
    """A -p value as the runner's YAML reading gives it back: 100, true, [50, 75], null (a scalar's
    YAML document-end marker "..." dropped, so the recorded command reads as one would type it)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


class Claim:
    """An exclusive, non-blocking lock on outputs/batch/<name>.claims/<key>.lock; the file says who holds it.
    The lock belongs to the open file: the run's process inherits it, and it ends with the last holder."""

    def __init__(self, folder: Path, key: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{key}.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": now_utc()}).encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def _die_with_parent() -> None:
    """In the run's process, before it starts: SIGTERM when the runner dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def end_children(signum: int = signal.SIGTERM) -> None:
    """Send `signum` to every run this runner has started and that is still running."""
    with _children_lock:
        for proc in list(_children):
            if proc.poll() is None:
                proc.send_signal(signum)


def error_message(stderr: str) -> str:
    """The run's own error message (from its first 'error:' line to the end), without progress bars or
    warnings; the last lines of stderr when it printed none."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            return "\n".join(lines[i:])
    return "\n".join(lines[-5:])


def execute(run: Run, profile: str | None, notebooks_dir: Path, claim: Claim | None = None) -> dict:
    """Run one notebook in its own process; a record of what happened. The process holds the claim too."""
    output = shown_path(notebooks_dir / f"{run.key}.ipynb")  # relative to the repository: the recorded command
    cmd = [sys.executable, "-m", "xcross_lib.run", run.notebook, "-o", output]  # and ledger name no machine path
    if profile:
        cmd += ["--profile", profile]
    for k, v in run.parameters.items():
        cmd += ["-p", k, _cli_value(v)]
    started, commit = time.perf_counter(), checkout_commit(short=True)  # the code the run's process imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    fds = (claim.fd,) if claim is not None and claim.fd is not None else ()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
                            pass_fds=fds, preexec_fn=_die_with_parent)
    with _children_lock:
        _children.add(proc)
    try:
        _, stderr = proc.communicate()
    finally:
        with _children_lock:
            _children.discard(proc)
    return {"key": run.key, "notebook": run.notebook, "parameters": run.parameters,
            "status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode,
            "wall_s": round(time.perf_counter() - started, 1), "executed_notebook": output,
            "error": error_message(stderr) if proc.returncode else "", "commit": commit,
            "finished_at": now_utc()}


def run_grid(path: str | os.PathLike, jobs: int = 1, output_dir=None, progress: bool = True) -> list[dict]:
    """Run every unfinished, unclaimed run of a grid file; returns the records of this call's runs
    (a run claimed by another runner, or finished by it meanwhile, gets status "skipped", not in the ledger)."""
    from tqdm.auto import tqdm

    name, profile, runs = load_grid(path)
    root = outputs_dir(output_dir)
    ledger, shipped = grid_ledgers(root, name)
    claims = root / "batch" / f"{name}.claims"
    notebooks_dir = root / "notebooks" / "batch"
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    done = done_keys(root, name)
    todo = [r for r in runs if r.key not in done]
    if progress:
        print(f"[batch] {name}: {len(runs)} runs, {len(runs) - len(todo)} done before, {len(todo)} to run, {jobs} at a time")
    records = []

    def one(run: Run) -> dict:
        claim = Claim(claims, run.key)
        if not claim.acquire():
            return {"key": run.key, "status": "skipped", "why": f"claimed by {claim.holder()}"}
        try:
            if run.key in done_keys(root, name):  # finished by another runner since this one started
                return {"key": run.key, "status": "skipped", "why": "finished by another runner"}
            record = execute(run, profile, notebooks_dir, claim)
            ledger.append(record)
            if record["status"] == "ok" and run.parameters.get("write_reference"):
                shipped.append(record)  # beside the tables it wrote: committed with them
            return record
        finally:
            claim.release()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for record in tqdm(pool.map(one, todo), total=len(todo), desc=name, disable=not progress):
            records.append(record)
            if progress and record["status"] == "failed":
                tqdm.write(f"[batch] failed: {record['key']}\n{record['error']}\n"
                           f"[batch] the executed notebook: {record['executed_notebook']}")
            elif progress and record["status"] == "skipped":
                tqdm.write(f"[batch] skipped: {record['key']} ({record['why']})")
    return records


def _stop(signum, frame) -> None:
    """Ctrl-C or SIGTERM: end the runs, then leave (finished runs are in the ledger)."""
    end_children(signal.SIGTERM)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xcross_lib.batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="a grid YAML file")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        if args.dry_run:
            name, _, runs = load_grid(args.grid)
            done = done_keys(outputs_dir(), name)
            for r in runs:
                print(("done  " if r.key in done else "todo  ") + r.key)
            return 0
        records = run_grid(args.grid, args.jobs)
    except ParameterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in records if r["status"] == "failed"]
    skipped = [r for r in records if r["status"] == "skipped"]
    print(f"[batch] {len(records) - len(failed) - len(skipped)} ok, {len(failed)} failed, {len(skipped)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
