"""engines/memory.py: malloc keeps a frame's freed memory for the next one (glibc), and the CLI asks for it."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A child process that runs a frame's worth of arithmetic on a 1080p relu3_1-sized tensor (133 MB; two
# temporaries of that size) sixteen times and prints the minor page faults of the last two runs (after
# keep_freed_memory() or not): the heap settles within a few runs (4 here, more in CI once), after which the
# kept memory is reused.
_CHILD = r"""
import resource, sys
import torch
sys.path.insert(0, sys.argv[1])
from engines.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[2] == "keep" else None
x = torch.rand(256, 270, 480)
for i in range(16):
    if i == 14:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (x - 0.5) * 2.0
    z = y.clamp_min(0)
    del y, z
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, x.nelement() * x.element_size())
"""


def _child(how: str, env: dict | None = None) -> tuple[str, int, int]:
    """(keep_freed_memory()'s answer, minor page faults of the last two runs, bytes of one temporary)."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), how], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0], int(out[1]), int(out[2])


HUGE_PAGE = 2 << 20           # x86-64's and arm64's transparent huge page (2 MiB)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults_unless_the_system_malloc_is_asked_for():
    """Two 133 MB temporaries a run: the system's malloc maps them afresh every time, so the last two runs
    fault in every page again; kept, the runs reuse the pages.  STYLECAM_MALLOC=system turns it off.

    How many faults that is depends on the machine's page size for malloc's mappings, not on
    keep_freed_memory: some 130,000 with 4 KiB pages, a few thousand where transparent huge pages back them
    (THP=always, glibc.malloc.hugetlb=1).  So the kept and the system runs are compared with the plain run
    of the same machine, by ratio; where even the plain run takes fewer faults than mapping the
    temporaries with 2 MiB pages would, faults cannot show reuse here, and the test says so."""
    applied, kept, nbytes = _child("keep")
    _, plain, _ = _child("plain")
    off, system, _ = _child("keep", {"STYLECAM_MALLOC": "system"})
    assert applied == "True" and off == "False"
    fresh_huge = 2 * 2 * nbytes // HUGE_PAGE          # two runs, two temporaries, mapped with huge pages
    if plain < fresh_huge:
        pytest.skip(f"the plain malloc took only {plain} page faults in two runs (fewer than {fresh_huge}, "
                    f"its temporaries' 2 MiB pages): huge pages or another malloc here; faults cannot show reuse")
    assert system > 0.8 * plain, (system, plain)      # STYLECAM_MALLOC=system: as plain as the plain run
    assert kept < 0.25 * plain, (kept, plain)         # 0 once settled; a quarter leaves room for a slow settling


def test_keep_freed_memory_is_applied_once_and_the_cli_asks_for_it(monkeypatch, capsys):
    from engines import memory
    from realtime import cli
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["--source", "/nonexistent/clip.mp4", "--style", "/nonexistent/style.jpg", "-q"]) == 2
    assert calls == [1]
    assert "stylecam: error:" in capsys.readouterr().err
    monkeypatch.undo()

    # mallopt is called once a process (once per parameter), however often it is asked: a fake libc counts
    class FakeMallopt:
        def __init__(self):
            self.calls, self.answer = [], 1            # glibc: 1 on success, 0 on failure

        def __call__(self, param, value):
            self.calls.append((param, value))
            return self.answer

    mallopt = FakeMallopt()
    libs = []
    monkeypatch.setattr(memory, "_applied", None)      # as in a fresh process
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.delenv("STYLECAM_MALLOC", raising=False)
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libs.append(name) or SimpleNamespace(mallopt=mallopt))
    assert memory.state() == "system (not set)"
    assert [memory.keep_freed_memory() for _ in range(3)] == [True] * 3
    assert mallopt.calls == [(memory.M_MMAP_MAX, 0), (memory.M_TRIM_THRESHOLD, memory._TRIM_BYTES)]
    assert len(libs) == 1
    assert memory.state() == "keeps freed memory"                    # what benchmarks record
    # STYLECAM_MALLOC=system: malloc left alone, and said so
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv("STYLECAM_MALLOC", "system")
    assert memory.keep_freed_memory() is False and memory.keep_freed_memory() is False
    assert len(mallopt.calls) == 2 and memory.state() == "system"
    # a libc that refuses (mallopt answers 0): not applied, and not asked again
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.delenv("STYLECAM_MALLOC")
    mallopt.answer = 0
    assert memory.keep_freed_memory() is False and memory.keep_freed_memory() is False
    assert len(mallopt.calls) == 3 and memory.state() == "system"


def test_free_memory_is_known_without_proc_meminfo(monkeypatch):
    """Where /proc/meminfo does not exist (macOS, Windows) the --size check used to check nothing; there
    it reads the machine's physical memory (Windows: GlobalMemoryStatusEx's available memory)."""
    import builtins

    from engines import memory
    real_open = builtins.open
    meminfo_total = None
    if os.path.exists("/proc/meminfo"):                # read before /proc is hidden: an independent figure
        with open("/proc/meminfo") as f:
            meminfo_total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))

    def no_proc(path, *a, **k):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", no_proc)
    total = memory.available_bytes("cpu")
    assert total is not None and total > 10 ** 8
    if os.name != "nt":                      # Windows reads its own call (no os.sysconf there)
        assert total == memory._physical_total()
    if meminfo_total is not None:            # Linux: the machine's memory, as the kernel reports it
        assert abs(total - meminfo_total) <= 0.01 * meminfo_total, (total, meminfo_total)
