"""engines/memory.py: malloc keeps a frame's freed memory for the next one (glibc), and the CLI asks for it."""
import os
import subprocess
import sys
from pathlib import Path

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
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _child(how: str, env: dict | None = None) -> tuple[str, int]:
    import os
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), how], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults_unless_the_system_malloc_is_asked_for():
    """Two 133 MB temporaries a run are 65,000 pages: the system's malloc maps them afresh every time (some
    130,000 faults in two runs); kept, the runs reuse the pages.  STYLECAM_MALLOC=system turns it off."""
    applied, kept = _child("keep")
    _, plain = _child("plain")
    off, system = _child("keep", {"STYLECAM_MALLOC": "system"})
    assert applied == "True" and off == "False"
    assert plain > 60_000 and system > 60_000
    assert kept < 0.25 * plain                  # 0 once settled; a quarter leaves room for a slow settling


def test_keep_freed_memory_is_applied_once_and_the_cli_asks_for_it(monkeypatch, capsys):
    from engines import memory
    from realtime import cli
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["--source", "/nonexistent/clip.mp4", "--style", "/nonexistent/style.jpg", "-q"]) == 2
    assert calls == [1]
    assert "stylecam: error:" in capsys.readouterr().err
    monkeypatch.undo()
    first = memory.keep_freed_memory()
    assert memory.keep_freed_memory() is first             # cached: mallopt is called once per process
    assert memory.state() == ("keeps freed memory" if first else "system")     # what benchmarks record


def test_free_memory_is_known_without_proc_meminfo(monkeypatch):
    """Where /proc/meminfo does not exist (macOS, Windows) the --size check used to check nothing; there
    it reads the machine's physical memory (Windows: GlobalMemoryStatusEx's available memory)."""
    import builtins

    from engines import memory
    real_open = builtins.open

    def no_proc(path, *a, **k):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", no_proc)
    total = memory.available_bytes("cpu")
    assert total is not None and total > 10 ** 8
    if os.name != "nt":                      # Windows reads its own call (no os.sysconf there)
        assert total == memory._physical_total()
