"""nmt.host: malloc serves large blocks from its heap and keeps them when freed."""

import ctypes
import subprocess
import sys

import pytest

# Mallocs and frees 64 MiB; prints (the setting in force, MiB mmapped while the block is held,
# MiB free in the heap after it is freed), from glibc's mallinfo2.
PROBE = """
import ctypes, sys
from nmt import host

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = host.keep_freed_memory() if sys.argv[1] == "keep" else None
block = libc.malloc(64 * 2**20)
mapped = libc.mallinfo2().hblkhd >> 20
libc.free(block)
print(kept, mapped, libc.mallinfo2().fordblks >> 20)
"""


def probe(mode: str) -> tuple[str, int, int]:
    kept, mapped, free = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                                        text=True, check=True).stdout.split()
    return kept, int(mapped), int(free)


def has_mallinfo2() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not has_mallinfo2(), reason="glibc >= 2.33 (mallopt, mallinfo2)")
def test_large_blocks_come_from_the_heap_and_stay_when_freed():
    assert probe("keep") == ("True", 0, 64)  # nothing mmapped; the freed 64 MiB kept for reuse
    _, mapped, free = probe("default")  # glibc's default: a fresh mmap, unmapped on free
    assert mapped >= 64 and free < 64


def test_calling_again_changes_nothing():
    from nmt import host

    first = host.keep_freed_memory()
    assert host.keep_freed_memory() is first
