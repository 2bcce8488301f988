"""Keep freed memory in the process (Linux, glibc) so that CPU training does not page-fault every step.

glibc serves each allocation above a threshold (it adapts, up to 32 MiB) with a fresh mmap and
unmaps it on free. A training step allocates its activations afresh; those over 32 MiB (MiniLM at
8 users x 30 candidates: (240, 100, 1536) float32 is 147 MiB; DeBERTa-v3-base sized at one user)
then cost the kernel a zeroed page every 4 KiB, every step. With mmap off and trimming off, freed
blocks stay in the heap and the next step reuses them; the process keeps its peak memory instead
of returning it. Measured on this project's 2-core CPU (`benchmarks/bench_speed.py`, figure
"allocator"): see the README's speed section.

Called by the trainer and by scoring on a CPU; XCROSS_MALLOC=default leaves glibc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Once per process: mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, -1). True where
    glibc took both settings; False on other systems or with XCROSS_MALLOC=default."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("XCROSS_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl and others have no such knobs  # noqa: B018
    except (OSError, AttributeError):
        return _done
    _done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
    return _done
