"""A long run's time and memory, with malloc keeping freed memory (the CLI's way) and with the system's.

    python benchmarks/soak.py [--frames 160] [--switch 20] [--sizes 360,480] [--backend onnx|onnx-int8|torch]
                              [--json out.json]

Each setting runs in a child process of its own (malloc's setting is per process): the live pipeline
(``benchmarks/fps.py``'s objects, ``adain``, portrait regions) over the demo clip's frames for
``--frames`` frames, switching the processing height between ``--sizes`` every ``--switch`` frames,
as a user who changes the size would.  Reported: wall seconds, and the resident memory after each
block of ``--switch`` frames -- whether keeping freed memory makes the process grow without bound
(engines/memory.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402


def rss_mb() -> int:
    """This process's resident memory in MB (Linux /proc; 0 elsewhere)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def child(a) -> dict:
    from engines.memory import keep_freed_memory
    kept = keep_freed_memory() if a.malloc == "kept" else False
    from benchmarks.fps import build, load_frames
    heights = [int(h) for h in a.sizes.split(",")]
    sizes = [(h * 16 // 9 // 2 * 2, h) for h in heights]
    st, seg = build(a.backend, "cpu", False, "relu3_1", "adain", "portrait", sizes[0])
    frames = load_frames(12)
    rss, t = [], time.perf_counter()
    for i in range(a.frames):
        size = sizes[(i // a.switch) % len(sizes)]
        if st.config.size != size:
            st.config = dataclasses.replace(st.config, size=size)
        f = frames[i % len(frames)]
        st.stylize(f, seg(f))
        if (i + 1) % a.switch == 0:
            rss.append(rss_mb())
    return {"malloc": "kept" if kept else "system", "seconds": time.perf_counter() - t, "rss_mb": rss}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int_at_least(1), default=160, help="frames in all (default %(default)s)")
    p.add_argument("--switch", type=int_at_least(1), default=20,
                   help="frames between size switches (default: %(default)s)")
    p.add_argument("--sizes", default="360,480", help="processing heights to switch between (default: %(default)s)")
    p.add_argument("--backend", default="onnx", choices=["onnx", "onnx-int8", "torch"],
                   help="onnx-int8: the CLI's --backend onnx --int8 (default: %(default)s)")
    p.add_argument("--json", default=None, help="write the results and the machine's record to this JSON file")
    p.add_argument("--child", choices=["kept", "system"], dest="malloc", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    try:
        if not all(int(h) > 0 for h in a.sizes.split(",")):
            raise ValueError
    except ValueError:
        p.error(f"--sizes takes heights in pixels separated by commas, got {a.sizes!r}")
    if a.malloc:                                   # in a child: run, print one JSON line
        print(json.dumps(child(a)))
        return 0
    rows = []
    for how in ("kept", "system"):
        env = {**os.environ, "STYLECAM_MALLOC": "system" if how == "system" else ""}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", how, "--frames", str(a.frames), "--switch",
               str(a.switch), "--sizes", a.sizes, "--backend", a.backend]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"malloc {row['malloc']:<6} {row['seconds']:6.1f} s for {a.frames} frames; resident MB every "
              f"{a.switch} frames: {row['rss_mb']}", flush=True)
    info = machine_info(argv, __file__)
    print(f"{a.backend}, heights {a.sizes}; {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "frames": a.frames, "switch": a.switch, "sizes": a.sizes,
                            "backend": a.backend, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
