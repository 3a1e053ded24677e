"""``python -m export`` / ``stylecam export``: ONNX and TensorRT exports with verified parity.

After every export, ``compare_outputs`` runs PyTorch and the exported model on real images
(the bundled demo frame and style, at 240x320 and an odd 157x211; for a TensorRT engine, at its
profile's smallest size and an odd one inside it) and prints the max and
mean error; the export fails, and its file is removed, if the relative error exceeds the
tolerance (FP32: 1e-3; FP16: 2e-2; INT8: 1e-1; see README).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("export")


# an engine profile's smallest and largest image (HxW): any orientation, down to what the live command can
# feed (a painting's short side, realtime.style.MIN_STYLE_SIDE)
DEFAULT_MIN, DEFAULT_MAX = (32, 32), (1920, 1920)


def engine_parity_sizes(a) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two image sizes inside an engine's profile to check its parity at (the profile refuses any other):
    its smallest, and an odd one between its smallest and the size it is tuned for."""
    mid = tuple(min(hi, ((lo + o) // 2) | 1) for lo, o, hi in zip(a.min, a.opt, a.max))
    return tuple(a.min), mid


def parse_hw(text: str) -> tuple[int, int]:
    """'720x1280' -> (720, 1280): height first, as the tensors' NCHW shapes (stylecam --size is WxH)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 720x1280, got {text!r}")
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"{text}: each side must be at least 16")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stylecam export", description=__doc__.replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["encoder", "decoder", "all"], default="all",
                   help="which network(s) to export (default %(default)s: the encoder and the decoder)")
    p.add_argument("--layer", choices=["relu3_1", "relu4_1"], default="relu3_1",
                   help="the VGG layer the encoder stops at and the decoder starts from (default %(default)s)")
    p.add_argument("--format", choices=["onnx", "engine"], default="onnx",
                   help="onnx, or a TensorRT engine (needs TensorRT and an NVIDIA GPU)")
    p.add_argument("--fp16", action="store_true", help="FP16 inside the graph, FP32 inputs and outputs")
    p.add_argument("--int8", action="store_true",
                   help="ONNX only: INT8 graphs for ONNX Runtime on the CPU (export/int8.py; calibrated on the "
                        "bundled demo images): the encoder whole, relu3_1's decoder from its first upsampling "
                        "on, relu4_1's whole with 8-bit weights")
    p.add_argument("--dynamic", action="store_true", default=True,
                   help="dynamic height and width (the default)")
    p.add_argument("--static", dest="dynamic", action="store_false", help="fixed input size (--opt)")
    p.add_argument("--min", type=parse_hw, default=None, metavar="HxW",
                   help="smallest image for an engine profile (default %dx%d)" % DEFAULT_MIN)
    p.add_argument("--opt", type=parse_hw, default=(720, 1280), metavar="HxW",
                   help="most common image: the size TensorRT tunes for (default 720x1280)")
    p.add_argument("--max", type=parse_hw, default=None, metavar="HxW",
                   help="largest image (default %dx%d); all three are HEIGHTxWIDTH, as in NCHW shapes" % DEFAULT_MAX)
    p.add_argument("--decoder", default=None, metavar="auto|small|wide|PATH",
                   help="decoder (default auto: the small weights/decoder_LAYER.pt, for ONNX and TensorRT "
                        "alike); small, wide, or a file")
    p.add_argument("--out", default="exported", help="output folder (default: %(default)s)")
    return p


def image_profile(what: str, layer: str, a) -> dict:
    """min/opt/max input shapes for an engine: images for the encoder, features for the decoder. A
    graph of fixed size (``a.dynamic`` False: --static) has one shape, --opt's, for all three."""
    from engines.vgg import LAYER_CHANNELS, feature_size
    if not getattr(a, "dynamic", True):
        a = argparse.Namespace(min=a.opt, opt=a.opt, max=a.opt)
    if what == "encoder":
        return {k: (1, 3, *getattr(a, k)) for k in ("min", "opt", "max")}
    c = LAYER_CHANNELS[layer]
    return {k: (1, c, *feature_size(*getattr(a, k), layer)) for k in ("min", "opt", "max")}


def export_one(what: str, a) -> tuple[Path, list[dict]]:
    from engines.base import load_engine
    from .onnx_export import TOLERANCE, build_network, compare_outputs, export_onnx, parity_inputs
    from .fp16 import FP16_MAX, SAFETY, check_fp16
    from engines.decoder import resolve_decoder
    # the decoder that runs where the artefact runs: a TensorRT engine on CUDA, an ONNX graph for ONNX
    # Runtime on the CPU (the half-width one for both since session 20; engines.decoder.WIDE_ON_CUDA)
    dec_path = resolve_decoder(a.decoder, a.layer, "cuda" if a.format == "engine" else "cpu") \
        if what == "decoder" else None
    module = build_network(what, a.layer, decoder_path=dec_path)
    prec = "int8" if a.int8 else "fp16" if a.fp16 else "fp32"
    if a.fp16:
        # a shipped network's recorded peak (export/activation_range.json, keyed by file), else measured here
        rec = check_fp16(module, what, a.layer, dec_path)
        log.info("FP16 check: %s %s peak activation %.0f (limit %.0f / %.0f)", what, a.layer, rec, FP16_MAX, SAFETY)
    out = Path(a.out)
    # the default decoder (weights/decoder_LAYER.pt) keeps the plain name; any other is named after its
    # file (decoder_relu3_1_wide_fp32.onnx), so that exporting both into one folder keeps both
    name = f"{what}_{a.layer}"
    if what == "decoder" and dec_path.stem != name:
        name += "_" + dec_path.stem.removeprefix(name + "_")
    onnx_path = out / f"{name}_{prec}{'' if a.dynamic else '_static'}.onnx"
    hw = a.opt if not a.dynamic else (64, 80)
    t = time.perf_counter()
    if a.int8:
        import tempfile
        from .int8 import quantize
        with tempfile.TemporaryDirectory() as work:
            fp32 = export_onnx(module, Path(work) / "fp32.onnx", what=what, layer=a.layer, dynamic=a.dynamic,
                               example_hw=hw)
            quantize(fp32, onnx_path, encoder=build_network("encoder", a.layer) if what == "decoder" else None)
    else:
        export_onnx(module, onnx_path, what=what, layer=a.layer, fp16=a.fp16, dynamic=a.dynamic, example_hw=hw)
    target = onnx_path
    if a.format == "engine":
        from .trt_build import build_engine
        target = onnx_path.with_suffix(".engine")
        build_engine(onnx_path, target, fp16=a.fp16, profile=image_profile(what, a.layer, a))
    seconds = time.perf_counter() - t
    try:        # the file stays only once its parity is shown: removed on any failure before that
        engine = load_engine(target, device="cuda" if a.format == "engine" else "cpu")
        sizes = (a.opt,) if not a.dynamic else engine_parity_sizes(a) if a.format == "engine" else None
        inputs = parity_inputs(what, a.layer) if sizes is None else parity_inputs(what, a.layer, sizes=sizes)
        rows = compare_outputs(module, engine, inputs)
    except BaseException:
        if target != onnx_path:
            target.unlink(missing_ok=True)
        raise
    tol = TOLERANCE[prec]
    worst = max(r["rel"] for r in rows)
    print(f"\n{target}  ({seconds:.1f} s)\n| input | max abs err | mean abs err | relative err |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['max_abs']:.3g} | {r['mean_abs']:.3g} | {r['rel']:.3g} |")
    if worst > tol:
        target.unlink(missing_ok=True)
        raise ValueError(f"parity failed for {target.name}: relative error {worst:.3g} > {tol:g}; file removed")
    print(f"parity OK: worst relative error {worst:.3g} <= {tol:g}")
    return target, rows


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    # an ONNX graph has no profile, and a --static one has one size, --opt's: say so rather than ignore them
    unused_profile = bool(a.min or a.max) and (not a.dynamic or a.format == "onnx")
    a.min, a.max = a.min or DEFAULT_MIN, a.max or DEFAULT_MAX
    if a.int8 and (a.format != "onnx" or a.fp16):
        p.error("--int8 makes ONNX graphs for ONNX Runtime: not with --format engine or --fp16")
    for side, i in (("height", 0), ("width", 1)):       # an engine's profile (an ONNX graph has none)
        if a.format == "engine" and not a.min[i] <= a.opt[i] <= a.max[i]:
            p.error(f"--min, --opt and --max must grow in {side}: got {a.min[i]}, {a.opt[i]}, {a.max[i]} "
                    "(sizes here are HEIGHTxWIDTH: 720x1280 is a landscape 720p frame)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if unused_profile:
        log.warning("--min/--max shape a TensorRT engine's profile of a dynamic graph; ignored here (%s)",
                    "--static: the graph takes --opt's size only" if not a.dynamic else "an ONNX graph has none")
    from engines.weights import WeightsError
    whats = ["encoder", "decoder"] if a.what == "all" else [a.what]
    try:
        if a.format == "engine":
            from engines.trt_engine import tensorrt_or_error
            tensorrt_or_error("use --format onnx (an ONNX graph builds into an engine on the GPU's machine)")
        for w in whats:
            export_one(w, a)
    except (ValueError, FileNotFoundError, WeightsError) as e:
        print(f"stylecam export: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:          # --out not writable, a full disk: one line, not a traceback
        from realtime.output import os_reason
        print(f"stylecam export: error: cannot write to {a.out}: {os_reason(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "TensorRT" in str(e) or "GPU" in str(e):
            print(f"stylecam export: error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
