"""The allocator setting: large blocks come from the heap and stay there after free (glibc)."""

import ctypes
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CHILD = r"""
import ctypes, json, torch
from xcross_lib.training.allocator import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
took = keep_freed_memory()
block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, above glibc's largest mmap threshold
held = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(json.dumps({"took": took, "mmapped_while_held": held.hblkhd, "heap_while_held": held.arena, "heap_after_free": freed.arena}))
"""


def glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")
    except OSError:
        return False


def run_child(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (sys.platform.startswith("linux") and glibc_with_mallinfo2()), reason="glibc only")
def test_large_blocks_come_from_the_heap_and_stay():
    mib64 = 64 * 2**20
    tuned = run_child(XCROSS_MALLOC="")
    assert tuned["took"] is True
    assert tuned["mmapped_while_held"] < mib64 <= tuned["heap_while_held"]
    assert tuned["heap_after_free"] >= mib64  # kept for the next step, not given back
    default = run_child(XCROSS_MALLOC="default")  # the opt-out leaves glibc as it is: the block is mmapped
    assert default["took"] is False
    assert default["mmapped_while_held"] >= mib64
