"""Keep the memory a frame frees for the next frame, instead of handing it back to the system.

A frame's large tensors are far above glibc malloc's mmap threshold (32 MB at most; a 1080p frame's
relu3_1 features alone are 133 MB in float32), so each one is a fresh ``mmap`` whose pages the kernel
zeroes on first touch, and is ``munmap``-ed when freed: every frame pays those page faults again, in
the encoder's, the reconstruction's and the decoder's temporaries alike.  ``keep_freed_memory`` tells
malloc never to map a block of its own (``M_MMAP_MAX`` = 0: large blocks come from the heap) and never
to give the top of the heap back (``M_TRIM_THRESHOLD``), so the second frame reuses the first frame's
pages.  The price: the process keeps its peak memory until it exits -- which a live stylizer, running
the same sizes frame after frame, needs anyway.  (The same reason PyTorch's CPU performance guide
recommends jemalloc or tcmalloc; this needs neither.)

Measured in session 21 (AMD EPYC, 2 cores, ``benchmarks/fps.py`` with and without it, README): a
frame 1.13-1.23x faster with ONNX Runtime (the CPU default), 1.15-2.0x with PyTorch (at 1080p 8.8 s ->
4.3 s).  (Turning ONNX Runtime's own CPU arena off as well, so that its buffers share the kept heap,
was tried and made its 1080p encoder 2.3x slower in a process that had run other sizes first: left on.)
``STYLECAM_MALLOC=system`` leaves malloc as it is.  Linux with glibc only; elsewhere
(macOS, Windows, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1       # glibc's <malloc.h> parameter numbers
M_MMAP_MAX = -4
_TRIM_BYTES = 2 ** 31 - 1   # mallopt takes an int: the largest, 2 GiB, in effect never

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc malloc to keep freed memory (see the module doc), once per process.  True if it is set
    (now or before), False where it does not apply: not Linux/glibc, or ``STYLECAM_MALLOC=system``."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("STYLECAM_MALLOC", "").lower() == "system":
        log.debug("STYLECAM_MALLOC=system: malloc left as it is")
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    if ok:
        log.debug("malloc keeps freed memory for reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)")
    _applied = ok
    return ok


def state() -> str:
    """What this process's malloc does, for a benchmark's record: keeping freed memory, or the system's way."""
    return {True: "keeps freed memory", False: "system"}.get(_applied, "system (not set)")


# Peak memory a processed pixel costs: `python benchmarks/memory.py --json docs/results/memory_cpu.json`
# (session 25, AMD EPYC, 2 cores, ONNX Runtime, relu3_1, the default decoder; a still at --size SxS in a
# fresh process; its peak is Linux's VmHWM): 1.19 GB at 512x512, 2.03 at 1024x1024, 6.09 at 2048x2048 --
# 1,257 bytes a pixel above 0.80 GB. On a GPU in FP16 it is less; used there too, it errs on the side of
# refusing.
BYTES_PER_PIXEL = 1260


def available_bytes(device) -> int | None:
    """Memory free for this process on ``device``: a CUDA device's free memory, Linux's MemAvailable,
    Windows' available physical memory, elsewhere (macOS) the machine's physical memory as a bound;
    None where none of these is known (then nothing is checked)."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _windows_available() if os.name == "nt" else _physical_total()


def _windows_available() -> int | None:
    """Windows: the physical memory available now (GlobalMemoryStatusEx's ullAvailPhys)."""
    try:
        class MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]
        st = MemoryStatus()
        st.dwLength = ctypes.sizeof(MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):
            return int(st.ullAvailPhys)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _physical_total() -> int | None:
    """Elsewhere without /proc (macOS): the machine's physical memory -- an upper bound on what is free,
    which still refuses the sizes that cannot fit at all."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_processing_size(height: int, width: int, device) -> None:
    """ValueError, before the networks run, when processing ``height`` x ``width`` would need more memory
    than ``device`` has free (BYTES_PER_PIXEL a pixel): a clear message instead of the system killing the
    process (--size 8192x8192 on a 24 GB machine asks for ~80 GB)."""
    need = height * width * BYTES_PER_PIXEL
    have = available_bytes(device)
    what = "free" if os.path.exists("/proc/meminfo") or os.name == "nt" else "in this machine"
    if have is not None and need > have:
        raise ValueError(f"processing {width}x{height} pixels needs about {need / 1e9:.1f} GB of memory but "
                         f"{have / 1e9:.1f} GB are {what} here: choose a smaller --size")
