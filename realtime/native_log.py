"""MediaPipe's start-up lines, filtered out of the console.

MediaPipe 0.10.21's C++ side writes a dozen lines to file descriptor 2 on every run (absl's "All log
messages before absl::InitializeLog() ...", "Feedback manager requires a model with a single
signature inference ...", TF Lite's "Created TensorFlow Lite XNNPACK delegate"): harmless, and no
Python setting reaches them (GLOG_minloglevel no longer does since MediaPipe moved to absl logging).
``install()`` points descriptor 2 at a pipe read by a small child process that drops the lines matching
``NOISE`` and passes every other line on to the real stderr. Python's own ``sys.stderr`` (logging,
progress bars, error messages) keeps writing to the real stderr directly, so it is never delayed.

A child process rather than a thread: if the C++ side aborts (a failed CHECK prints its reason to
descriptor 2, then kills the process), the child is still there to pass the reason on. It ignores
Ctrl-C (the terminal sends it to the whole process group) and ends when the pipe closes, that is
when the program exits. ``STYLECAM_NATIVE_LOG=all`` (or ``--verbose``) shows everything.
"""
from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

NOISE = re.compile(
    rb"^(W0000 [^\]]*\b(inference_feedback_manager|landmark_projection_calculator)\.cc:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate)")

# the child: read lines from its stdin (the pipe), write the others to its stdout (the real stderr)
_CHILD = (
    "import os, re, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "noise = re.compile(sys.argv[1].encode('latin-1'))\n"
    "out = sys.stdout.buffer\n"
    "for line in sys.stdin.buffer:\n"
    "    if not noise.match(line):\n"
    "        out.write(line)\n"
    "        out.flush()\n"
)

_installed: dict | None = None


def install(noise: re.Pattern = NOISE) -> bool:
    """Filter descriptor 2 for the rest of the process (see the module's docstring). False, and
    nothing changed, when STYLECAM_NATIVE_LOG=all, when already installed, or where it cannot be done
    (no descriptor 2, no pipes)."""
    global _installed
    if _installed is not None or os.environ.get("STYLECAM_NATIVE_LOG") == "all":
        return False
    try:
        sys.stderr.flush()
        real = os.dup(2)
        r, w = os.pipe()
        child = subprocess.Popen([sys.executable, "-c", _CHILD, noise.pattern.decode("latin-1")],
                                 stdin=r, stdout=real, stderr=subprocess.DEVNULL, close_fds=True)
        os.close(r)
        os.dup2(w, 2)
        os.close(w)
    except (OSError, ValueError, AttributeError):
        return False
    # Python's stderr keeps the real one: a duplicate of the original descriptor 2
    sys.stderr = open(real, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace", closefd=False)
    _installed = {"real": real, "child": child}
    atexit.register(uninstall)
    return True


def uninstall() -> None:
    """Give descriptor 2 back and let the child pass on what is left (at exit, so that the last native
    lines come out before the shell's prompt)."""
    global _installed
    if _installed is None:
        return
    real, child = _installed["real"], _installed["child"]
    _installed = None
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(real, 2)                     # the pipe's write end closes: the child reads to its end
    try:
        child.wait(timeout=2)
    except subprocess.TimeoutExpired:    # something else still holds the pipe: leave the child to it
        pass
