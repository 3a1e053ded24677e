"""The INT8 encoder (``stylecam --int8``, export/int8.py) against the FP32 one, on this CPU.

    python benchmarks/int8.py [DIR] [--layers relu3_1,relu4_1] [--sizes 240,480,720] [--runs 5] [--json F]

For each layer the FP32 encoder is exported to ONNX and quantized twice, with 8-bit weights (what
a CPU with VNNI gets) and with 7-bit ones (``reduce_range``, what a CPU without VNNI gets); then:

* quality: the held-out portraits (training/holdout.txt, or the photos of DIR; longer side <= 512
  px, as benchmarks/autoencoder.py) encoded by each and decoded by the shipped FP32 decoder: mean PSNR and
  SSIM against the photo, and the features' mean relative error against FP32 ONNX Runtime's;
* speed: the encoder alone in ONNX Runtime (2 threads unless --threads), median ms of ``--runs`` runs
  on a demo-clip frame at each processing height (16:9), after one warm-up run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.autoencoder import evaluate, holdout_files, read_at_most  # noqa: E402
from benchmarks.common import machine_info, write_json  # noqa: E402


def ms_per_run(engine, x: torch.Tensor, runs: int) -> float:
    engine(x)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        engine(x)
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", help="folder of photos instead of the held-out portraits")
    p.add_argument("--layers", default="relu3_1,relu4_1")
    p.add_argument("--sizes", default="240,480,720", help="processing heights for the speed table")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default %(default)s)")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from engines.ort_engine import OrtEngine
    from engines.weights import build_encoder, load_encoder_weights
    from export.int8 import cpu_has_vnni, quantize_encoder
    from export.onnx_export import export_onnx
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP
    from realtime.images import bgr_to_tensor
    frame = next(iter(VideoFileSource(DEMO_CLIP)))[0]
    if a.dir:
        from training.data import list_images
        files = list_images(a.dir)
    else:
        files = holdout_files()
    if not files:
        p.error("no photos found")
    ew = load_encoder_weights(None)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for layer in a.layers.split(","):
            fp32 = export_onnx(build_encoder(layer, ew), Path(work) / f"{layer}.onnx", what="encoder", layer=layer)
            engines = {"fp32": OrtEngine(fp32, threads=a.threads)}
            for bits, rr in ((8, False), (7, True)):
                q = quantize_encoder(fp32, Path(work) / f"{layer}_w{bits}.onnx", reduce_range=rr)
                engines[f"int8, {bits}-bit weights"] = OrtEngine(q, threads=a.threads)
            ref_rows = None
            for name, eng in engines.items():
                rows = evaluate(files, layer, None, a.max_side, encoder=eng)
                r = {"layer": layer, "encoder": name, "mean_psnr": float(np.mean([x["psnr"] for x in rows])),
                     "mean_ssim": float(np.mean([x["ssim"] for x in rows])), "images": rows}
                if ref_rows is None:
                    ref_rows = rows
                else:
                    r["psnr_change"] = r["mean_psnr"] - float(np.mean([x["psnr"] for x in ref_rows]))
                    r["worse_images"] = sum(x["psnr"] < y["psnr"] for x, y in zip(rows, ref_rows))
                    errs = []
                    for f in files[:8]:
                        x = bgr_to_tensor(read_at_most(f, a.max_side))
                        fa, fb = engines["fp32"](x), eng(x)
                        errs.append(float((fa - fb).abs().mean() / fa.abs().mean()))
                    r["feature_rel_error"] = float(np.mean(errs))
                r["ms"] = {}
                for h in (int(v) for v in a.sizes.split(",")):
                    w = round(h * 16 / 9) // 2 * 2
                    x = bgr_to_tensor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA))
                    r["ms"][h] = ms_per_run(eng, x, a.runs)
                results.append(r)
                print(f"{layer} {name:<22} {r['mean_psnr']:.2f} dB (SSIM {r['mean_ssim']:.4f})"
                      + (f", {r['psnr_change']:+.2f} dB, {r['worse_images']} of {len(rows)} portraits worse, "
                         f"features {100 * r['feature_rel_error']:.1f} % off" if "psnr_change" in r else "")
                      + "; encoder ms " + ", ".join(f"{h}p {v:.0f}" for h, v in r["ms"].items()), flush=True)
    info = machine_info()
    info["command"] = "int8.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info["vnni"] = cpu_has_vnni()
    print(f"{info['cpu']} ({info['cores']} cores, VNNI {'yes' if info['vnni'] else 'no'}), {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "threads": a.threads, "max_side": a.max_side, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
