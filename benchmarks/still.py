"""Seconds to stylize one still image (issue: "well under a second for a 512-pixel image").

    python benchmarks/still.py [--image PHOTO] [--side 512] [--backends torch,onnx] [--runs 10]
                               [--json out.json] [--quick]

Two numbers per backend, both with the default mode and regions:
  * ``stylize``: segmentation (MediaPipe, static mode) + encoder + reconstruction +
    decoder + compositing for the image at its own size with its longer side ``--side``,
    the median of ``--runs`` runs after a warm-up (the models are loaded once, as in a
    long-running process);
  * ``command``: the wall time of the whole ``run_cam.py --source PHOTO --style PAINTING
    --out out.png`` in a fresh process (imports, weight loading, the cached ONNX export,
    the style's encoding, writing the file).
The default photo is Grace Hopper's portrait that ships with matplotlib (public domain),
the default painting the bundled demo style.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import apply_quick, check_decoder, check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from engines.memory import keep_freed_memory  # noqa: E402
from benchmarks.fps import build, time_frames  # noqa: E402


def default_image() -> Path:
    from matplotlib import cbook
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load(path: Path, side: int):
    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"error: cannot read image {path}")
    s = side / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


def time_command(photo: Path, backend: str, out_dir: Path, decoder: str | None = None) -> float:
    from realtime.cli import DEMO_STYLE
    out = out_dir / f"still_{backend}.png"
    cmd = [sys.executable, str(ROOT / "run_cam.py"), "--source", str(photo), "--style", str(DEMO_STYLE),
           "--out", str(out), "-q"] + (["--backend", "onnx", "--int8"] if backend == "onnx-int8" else
                                       ["--backend", backend])
    if decoder:
        cmd += ["--decoder", decoder if decoder in ("auto", "small", "wide") else str(Path(decoder).resolve())]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    dt = time.perf_counter() - t
    if cv2.imread(str(out)) is None:
        raise SystemExit(f"error: {' '.join(cmd)} wrote no image")
    return dt


def main(argv=None) -> int:
    keep_freed_memory()              # as the CLI, so that it times what a user runs (STYLECAM_MALLOC=system: not)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, default=None, help="photo (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--side", type=int_at_least(16), default=512, help="longer side in pixels (default 512)")
    p.add_argument("--backends", default="torch,onnx",
                   help="comma-separated: torch, onnx, onnx-int8 (the CLI's --backend onnx --int8)")
    p.add_argument("--runs", type=int_at_least(1), default=10,
                   help="timed runs per backend, after two warm-up ones; the median is reported (default 10)")
    p.add_argument("--no-command", action="store_true", help="skip timing the whole command")
    p.add_argument("--decoder", default=None, metavar="small|wide|PATH",
                   help="decoder, as run_cam.py's --decoder (default: the CPU's, small); the whole command "
                        "gets it too")
    p.add_argument("--json", default=None, help="write the results and the machine's record to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 128 px, 2 runs, torch only, no command (sets --side, --runs, --backends unless given)")
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    if set(b for b in a.backends.split(",") if b) - {"torch", "onnx", "onnx-int8"} or not a.backends.strip(","):
        p.error(f"--backends takes torch, onnx, onnx-int8; got {a.backends!r}")
    if a.image is not None and not a.image.is_file():
        p.error(f"--image {a.image}: no such file")
    check_decoder(p, a.decoder, "relu3_1")
    if a.quick:
        apply_quick(p, a, argv, side=128, runs=2, backends="torch", no_command=True)
    photo = a.image or default_image()
    img = load(photo, a.side)
    size = (img.shape[1], img.shape[0])
    results = []
    with tempfile.TemporaryDirectory() as td:
        resized = Path(td) / "photo.png"
        cv2.imwrite(str(resized), img)
        for b in (b for b in a.backends.split(",") if b):
            st, seg = build(b, "cpu", False, "relu3_1", "adain", "portrait", size, static=True, decoder=a.decoder)
            try:
                med = time_frames(st, seg, [img] * a.runs, size, "cpu", warmup=2)
            finally:
                seg.close()
            r = {"backend": b, "width": size[0], "height": size[1], "runs": a.runs, "median_ms": med,
                 "stylize_s": (med["segment"] + med["stylize"]) / 1000}
            if not a.no_command:
                time_command(resized, b, Path(td), a.decoder)   # first run may export/cache the ONNX graphs
                r["command_s"] = min(time_command(resized, b, Path(td), a.decoder) for _ in range(3))
            results.append(r)
            print(f"{b}: {size[0]}x{size[1]} stylize {r['stylize_s']:.3f} s "
                  f"(encoder {med['encoder']:.0f} ms, reconstruct {med['reconstruct']:.0f} ms, "
                  f"decoder {med['decoder']:.0f} ms, segment {med['segment']:.0f} ms)"
                  + (f"; whole command {r['command_s']:.2f} s" if "command_s" in r else ""), flush=True)
    info = machine_info(argv, __file__)
    print(f"machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "image": str(photo), "decoder": a.decoder or "default", "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
