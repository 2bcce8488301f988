"""kill -9 of the batch runner mid-grid, then two runners at once on the same grid: a transcript.

    .venv/bin/python benchmarks/kill_runner.py            # about 2 minutes on 2 cores

A grid of four runs of a small notebook (each writes "start <pid> <time>" to its own log, sleeps,
writes "end <pid> <time>") runs in a temporary outputs folder. The first runner is killed with
SIGKILL while its second run is in flight; then two runners start at once on the same grid. The
script checks and prints: every finished run kept (not run again), the in-flight run ended with its
runner and run again exactly once, never two copies of one run at the same time, every ledger line
valid JSON and every run's key done once. Exit 1 if any check fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
N_RUNS, SECONDS = 4, 12.0

CELL = """import os, time
open(log, "a").write(f"start {os.getpid()} {time.time():.3f}\\n")
time.sleep(seconds)
open(log, "a").write(f"end {os.getpid()} {time.time():.3f}\\n")
"""


def make_grid(tmp: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seconds = 1.0\nlog = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "sleepy.ipynb")
    grid = {"name": "killdemo", "runs": [{"notebook": str(tmp / "sleepy.ipynb"),
                                         "grid": {"log": [str(tmp / f"run{k}.log") for k in range(N_RUNS)]},
                                         "fixed": {"seconds": SECONDS}}]}
    (tmp / "grid.yaml").write_text(yaml.safe_dump(grid))
    return tmp / "grid.yaml"


def runner(grid: Path, env: dict, name: str, tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xcross_lib.batch", str(grid)], env=env, cwd=REPO,
                            stdout=open(tmp / f"{name}.out", "w"), stderr=subprocess.STDOUT)


def intervals(log: Path) -> list[tuple[str, float, float | None]]:
    """(pid, start, end or None) of every start written to a run's log."""
    out, open_ = [], {}
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, pid, t = line.split()
        if kind == "start":
            open_[pid] = float(t)
        else:
            out.append((pid, open_.pop(pid), float(t)))
    return out + [(pid, t, None) for pid, t in open_.items()]


def main() -> int:
    checks = []

    def check(ok: bool, what: str) -> None:
        checks.append(ok)
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        grid = make_grid(tmp)
        env = {**os.environ, "XCROSS_OUTPUTS_DIR": str(tmp / "out"), "PYTHONPATH": str(REPO)}
        ledger = tmp / "out" / "batch" / "killdemo.jsonl"
        t0 = time.time()
        print(f"grid: {N_RUNS} runs of {SECONDS:.0f} s each; runner A starts")
        a = runner(grid, env, "A", tmp)
        while not (tmp / "run1.log").exists():  # A's second run has started
            time.sleep(0.2)
        time.sleep(3)
        done_before = [json.loads(l)["key"] for l in ledger.read_text().splitlines() if l.strip()]
        print(f"t={time.time() - t0:5.1f}s kill -9 runner A (pid {a.pid}) while run1 is in flight; "
              f"ledger holds {len(done_before)} record(s)")
        killed_at = time.time()
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        time.sleep(1)
        killed = intervals(tmp / "run1.log")
        print(f"t={time.time() - t0:5.1f}s runners B and C start at once on the same grid")
        b, c = runner(grid, env, "B", tmp), runner(grid, env, "C", tmp)
        rc_b, rc_c = b.wait(timeout=600), c.wait(timeout=600)
        print(f"t={time.time() - t0:5.1f}s B exited {rc_b}, C exited {rc_c}\n")
        for name in "ABC":
            print(f"--- runner {name}'s output (progress bars dropped)")
            for line in (tmp / f"{name}.out").read_text().replace("\r", "\n").splitlines():
                if line.startswith("[batch]"):
                    print("  " + line)
        print("\n--- each run's log: (kernel pid, start, end) in seconds from the first start")
        first = min(s for k in range(N_RUNS) for _, s, _ in intervals(tmp / f"run{k}.log"))
        for k in range(N_RUNS):
            shown = [(pid, round(s - first, 1), None if e is None else round(e - first, 1))
                     for pid, s, e in intervals(tmp / f"run{k}.log")]
            print(f"  run{k}: {shown}")
        lines = ledger.read_text().splitlines()
        print(f"\n--- ledger ({len(lines)} lines)")
        records = []
        for line in lines:
            print("  " + line[:160])
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append(None)
        print("\nchecks:")
        check(all(r is not None for r in records), "every ledger line is valid JSON")
        ok_keys = [r["key"] for r in records if r and r.get("status") == "ok"]
        check(len(ok_keys) == N_RUNS == len(set(ok_keys)), f"{N_RUNS} runs finished, each recorded once")
        check(len(done_before) == 1 and len(intervals(tmp / "run0.log")) == 1,
              "run0, finished before the kill, was kept and not run again")
        check(len(killed) == 1 and killed[0][2] is None and not Path(f"/proc/{killed[0][0]}").exists(),
              "run1's kernel was ended with its runner (a start without an end, its process gone)")
        finished = {k: [iv for iv in intervals(tmp / f"run{k}.log") if iv[2] is not None] for k in range(N_RUNS)}
        check(all(len(v) == 1 for v in finished.values()), "every run finished exactly once")
        # a start without an end is the killed run: it lasted at most until the kill (checked above)
        spans = {k: [(s, killed_at if e is None else e) for _, s, e in intervals(tmp / f"run{k}.log")]
                 for k in range(N_RUNS)}
        overlap = any(s2 < e1 and s1 < e2 for v in spans.values()
                      for i, (s1, e1) in enumerate(v) for (s2, e2) in v[i + 1:])
        check(not overlap, "no run had two copies in flight at once")
        skipped = sum((tmp / f"{n}.out").read_text().count("[batch] skipped:") for n in "BC")
        print(f"  ({skipped} skip notice(s) from B and C: runs the other one held)")
    print(f"\n{sum(checks)} of {len(checks)} checks passed")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
