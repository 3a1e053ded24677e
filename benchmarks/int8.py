"""The INT8 networks (``stylecam --int8``, export/int8.py) against the FP32 ones, on this CPU.

    python benchmarks/int8.py [DIR] [--layers relu3_1,relu4_1] [--sizes 240,480,720] [--runs 5] [--json F]

For each layer the FP32 encoder and shipped decoder are exported to ONNX and quantized, with 8-bit
weights (what a CPU with VNNI gets) and with 7-bit ones (``reduce_range``, what a CPU without VNNI
gets); the decoder from its first upsampling on, calibrated on the FP32 encoder's features. Then,
for FP32, the INT8 encoder alone, both networks INT8 (8- and 7-bit weights), and the decoder
quantized whole with 8- and 7-bit weights (what keeping its first stage FP32 saves); ``cli_default`` marks the pair that
``--int8`` runs on a CPU with VNNI (export/int8.py's WHOLE_DECODER_LAYERS decides whole or not):

* quality: the held-out portraits (training/holdout.txt, or the photos of DIR; longer side <= 512
  px, as benchmarks/autoencoder.py) encoded and decoded: mean PSNR and SSIM against the photo, the
  change against FP32 and on how many photos it is worse, and the features' mean relative error
  against FP32 ONNX Runtime's (on up to 8 photos);
* parity: each graph's worst relative error against its PyTorch network on ``stylecam export``'s
  parity images (the demo frame and painting at two sizes), the figure TOLERANCE['int8'] bounds;
* speed: each network alone in ONNX Runtime (2 threads unless --threads), median ms of ``--runs``
  runs on a demo-clip frame at each processing height (16:9), after one warm-up run.
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
from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402


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
    p.add_argument("--runs", type=int_at_least(1), default=5)
    p.add_argument("--threads", type=int_at_least(0), default=2, help="ONNX Runtime threads (default %(default)s)")
    p.add_argument("--max-side", type=int_at_least(16), default=512)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    if a.dir and not Path(a.dir).is_dir():
        p.error(f"{a.dir}: no such folder")
    try:
        [int(v) for v in a.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes takes heights separated by commas, got {a.sizes!r}")
    from engines.decoder import load_decoder
    from engines.ort_engine import OrtEngine
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from export.int8 import WHOLE_DECODER_LAYERS, cpu_has_vnni, quantize
    from export.onnx_export import compare_outputs, export_onnx, parity_inputs
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP
    from realtime.images import bgr_to_tensor
    if a.dir:
        from training.data import list_images
        files = list_images(a.dir)
    else:
        files = holdout_files()
    if not files:
        p.error("no photos found")
    frame = next(iter(VideoFileSource(DEMO_CLIP)))[0]
    ew = load_encoder_weights(None)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for layer in a.layers.split(","):
            enc = build_encoder(layer, ew)
            dec = load_decoder(weights_dir() / f"decoder_{layer}.pt", encoder_id=ew.encoder_id)
            e32 = export_onnx(enc, Path(work) / f"e_{layer}.onnx", what="encoder", layer=layer)
            d32 = export_onnx(dec, Path(work) / f"d_{layer}.onnx", what="decoder", layer=layer)
            nets = {("encoder", 32): OrtEngine(e32, threads=a.threads),
                    ("decoder", 32): OrtEngine(d32, threads=a.threads)}
            for bits in (8, 7):
                for what, src in (("encoder", e32), ("decoder", d32)):
                    q = quantize(src, Path(work) / f"{what[0]}_{layer}_w{bits}.onnx", encoder=enc,
                                 reduce_range=bits == 7, whole=False)
                    nets[what, bits] = OrtEngine(q, threads=a.threads)
            # the decoder quantized whole, its convolutions at the features' resolution too: what keeping
            # those FP32 (export/int8.py's decoder_fp32_convs) saves
            for bits in (8, 7):
                q = quantize(d32, Path(work) / f"d_{layer}_whole_w{bits}.onnx", encoder=enc,
                             reduce_range=bits == 7, whole=True)
                nets["decoder", f"{bits} whole"] = OrtEngine(q, threads=a.threads)
            # each graph against its PyTorch network on the export's parity images (stylecam export's check:
            # max |a - b| / max |a|, the worst of the four images; TOLERANCE['int8'] is its limit)
            refs = {"encoder": enc, "decoder": dec}
            parity = {key: max(r["rel"] for r in compare_outputs(refs[key[0]], eng, parity_inputs(key[0], layer)))
                      for key, eng in nets.items()}
            configs = {"fp32": (32, 32), "int8 encoder (8-bit weights)": (8, 32),
                       "int8 both (8-bit weights)": (8, 8), "int8 both (7-bit weights)": (7, 7),
                       "int8 encoder, decoder whole (8-bit)": (8, "8 whole"),
                       "int8 both, decoder whole (7-bit)": (7, "7 whole")}
            ms = {}
            for (what, bits), eng in nets.items():
                ms[what, bits] = {}
                for h in (int(v) for v in a.sizes.split(",")):
                    w = round(h * 16 / 9) // 2 * 2
                    x = bgr_to_tensor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA))
                    if what == "decoder":
                        x = nets["encoder", 32](x)
                    ms[what, bits][h] = ms_per_run(eng, x, a.runs)
            ref = None
            for name, (eb, db) in configs.items():
                e, d = nets["encoder", eb], nets["decoder", db]
                rows = evaluate(files, layer, None, a.max_side, encoder=e, decoder_engine=d)
                r = {"layer": layer, "config": name, "encoder_bits": eb, "decoder_bits": db,
                     "mean_psnr": float(np.mean([x["psnr"] for x in rows])),
                     "mean_ssim": float(np.mean([x["ssim"] for x in rows])), "images": rows,
                     "encoder_ms": ms["encoder", eb], "decoder_ms": ms["decoder", db],
                     "encoder_parity": parity["encoder", eb], "decoder_parity": parity["decoder", db],
                     # (with 7-bit weights every decoder keeps its first stage: the (7, 7) row, all layers)
                     "cli_default": (eb, db) == ((8, "8 whole") if layer in WHOLE_DECODER_LAYERS else (8, 8))}
                if ref is None:
                    ref = r
                else:
                    r["psnr_change"] = r["mean_psnr"] - ref["mean_psnr"]
                    r["worse_images"] = sum(x["psnr"] < y["psnr"] for x, y in zip(rows, ref["images"]))
                    errs = []
                    for f in files[:8]:
                        x = bgr_to_tensor(read_at_most(f, a.max_side))
                        fa, fb = nets["encoder", 32](x), e(x)
                        errs.append(float((fa - fb).abs().mean() / fa.abs().mean()))
                    r["feature_rel_error"] = float(np.mean(errs))
                results.append(r)
                print(f"{layer} {name:<30} {r['mean_psnr']:.2f} dB (SSIM {r['mean_ssim']:.4f})"
                      + (f", {r['psnr_change']:+.2f} dB, {r['worse_images']} of {len(rows)} worse, features "
                         f"{100 * r['feature_rel_error']:.1f} % off" if "psnr_change" in r else "")
                      + f"; parity {r['encoder_parity']:.3f} / {r['decoder_parity']:.3f}"
                      + "; ms encoder " + ", ".join(f"{h}p {v:.0f}" for h, v in r["encoder_ms"].items())
                      + ", decoder " + ", ".join(f"{h}p {v:.0f}" for h, v in r["decoder_ms"].items()), flush=True)
    info = machine_info(argv, __file__)
    info["vnni"] = cpu_has_vnni()
    print(f"{info['cpu']} ({info['cores']} cores, VNNI {'yes' if info['vnni'] else 'no'}), {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "threads": a.threads, "max_side": a.max_side, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
