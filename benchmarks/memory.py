"""Peak memory of a still image against its processing size: what engines/memory.py's BYTES_PER_PIXEL
(the CLI's check of --size against the free memory) rests on.

    python benchmarks/memory.py [--sides 512,1024,2048] [--backend onnx] [--json out.json]

For each side S, a fresh process runs ``stylecam --source PAINTING --style PAINTING --size SxS --out
out.png`` (the bundled demo painting, upscaled to S x S for processing; default mode and regions) and
reports its peak resident memory (Linux's VmHWM; elsewhere ``getrusage``'s ``ru_maxrss``). The slope
of a least-squares line through (pixels, peak) is the memory a processed pixel costs; its intercept
what the process holds before the first pixel (imports, networks, MediaPipe).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import check_outputs, int_list, machine_info, write_json  # noqa: E402

# the child: the CLI's own main() in this process, then its peak RSS in KiB on stdout's last line -- Linux's
# VmHWM (this address space's high-water mark), not getrusage's ru_maxrss, which Linux carries over from
# the parent at fork and exec (under pytest every size read the test process's 2.56 GB)
CHILD = ("import json, resource, sys\n"
         "from realtime.cli import main\n"
         "rc = main(sys.argv[1:])\n"
         "try:\n"
         "    kib = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])\n"
         "except (OSError, StopIteration):\n"
         "    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
         "from engines import memory\n"
         "print(json.dumps({'rc': rc, 'maxrss_kib': kib, 'malloc': memory.state()}))\n")


def peak_rss(side: int, backend: str, work: Path) -> tuple[int, str]:
    """Peak resident bytes of one CLI run at --size side x side, and what its malloc did."""
    from realtime.cli import DEMO_STYLE
    args = ["--source", str(DEMO_STYLE), "--style", str(DEMO_STYLE), "--size", f"{side}x{side}",
            "--out", str(work / f"out_{side}.png"), "--backend", backend, "-q"]
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT)
    last = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    if r.returncode != 0 or last.get("rc") != 0:
        raise RuntimeError(f"stylecam at {side}x{side} failed:\n{r.stderr[-2000:]}")
    return int(last["maxrss_kib"]) * 1024, last["malloc"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int_list(16), default="512,1024,2048",
                   help="square processing sizes, px, comma-separated (default %(default)s)")
    p.add_argument("--backend", default="onnx", choices=["onnx", "torch"], help="network runtime (default onnx)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    sides = a.sides
    if len(sides) < 2:
        p.error("--sides needs at least two sizes (a line through their peaks)")
    check_outputs(p, a.json)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for s in sides:
            peak, malloc = peak_rss(s, a.backend, Path(work))
            rows.append({"side": s, "pixels": s * s, "peak_bytes": peak})
            print(f"{s}x{s}: peak {peak / 1e9:.2f} GB", flush=True)
    px = np.array([r["pixels"] for r in rows], float)
    pk = np.array([r["peak_bytes"] for r in rows], float)
    slope, intercept = np.polyfit(px, pk, 1)
    print(f"{slope:.0f} bytes a processed pixel above {intercept / 1e9:.2f} GB ({a.backend})")
    info = machine_info(argv, __file__)
    info["malloc"] = malloc                     # the measured processes' (the CLI's), not this one's
    if a.json:
        write_json(a.json, {"machine": info, "backend": a.backend, "rows": rows,
                            "bytes_per_pixel": float(slope), "intercept_bytes": float(intercept)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
