"""Milliseconds per stage and FPS of the live pipeline, per backend, device, precision and resolution.

    python benchmarks/fps.py [--backends torch,onnx] [--sizes 240,360,480,720,1080] [--frames 20]
                             [--json out.json] [--png out.png] [--quick]

Stages: decode (reading the clip), segment (MediaPipe), prepare, encoder, reconstruct,
decoder, composite, output (a null sink).  Frames are the bundled demo clip, resized to
each height (16:9).  Warm-up first; on a GPU every stage is synchronised; the median over
``--frames`` frames is reported, with the machine and date.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (apply_quick, check_decoder, check_outputs, int_at_least, int_list, machine_info,  # noqa: E402
                               write_json)
from engines.memory import keep_freed_memory  # noqa: E402

STAGES = ("decode", "segment", "prepare", "encoder", "reconstruct", "decoder", "composite", "output")


def load_frames(n: int) -> list:
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP
    frames = []
    for f, _ in VideoFileSource(DEMO_CLIP):
        frames.append(f)
        if len(frames) >= n:
            break
    return frames


def synthetic_label_map(h: int, w: int, regions: str) -> np.ndarray:
    """A fixed portrait-shaped label map (BGR, the colours of realtime.segment.LABEL_COLORS): a person
    ellipse over the lower two thirds, and for ``portrait`` a face ellipse inside it."""
    from realtime.segment import LABEL_COLORS
    bgr = {k: tuple(int(c) for c in reversed(v)) for k, v in LABEL_COLORS.items()}
    lab = np.zeros((h, w, 3), np.uint8)
    lab[:] = bgr["background"]
    cv2.ellipse(lab, (w // 2, h), (max(1, int(w * 0.32)), max(1, int(h * 0.7))), 0, 0, 360, bgr["person"], -1)
    if regions == "portrait":
        cv2.ellipse(lab, (w // 2, int(h * 0.42)), (max(1, int(w * 0.12)), max(1, int(h * 0.2))), 0, 0, 360,
                    bgr["face"], -1)
    return lab


def build(backend: str, device: str, fp16: bool, layer: str, mode: str, regions: str, size: tuple[int, int],
          static: bool = False, deflicker: float = 0.0, decoder: str | None = None,
          channels_last: bool | None = None, cuda_graph: bool | None = None, fixed_regions: bool = False):
    """The CLI's objects (engines, style bank, stylizer, segmenter) for one configuration; ``decoder``
    a decoder file instead of the CLI's default for the device; ``channels_last``: the PyTorch
    engines in NHWC layout or not (None: the CLI's default for the device); ``cuda_graph``: the
    PyTorch engines replayed from a CUDA graph per input shape (TorchEngine(cuda_graph=True)) or not
    (None: the CLI's default for the device);
    ``fixed_regions``: style and frames segmented by synthetic_label_map instead of MediaPipe."""
    import argparse as ap
    from engines.decoder import load_decoder, resolve_decoder
    from engines.weights import build_encoder, load_encoder_weights
    from realtime.cli import DEMO_STYLE, make_engines
    from realtime.segment import make_segmenter
    from realtime.style import StyleBank
    from realtime.stylizer import Stylizer, StylizerConfig
    dev = torch.device(device)
    ew = load_encoder_weights(None)
    enc = build_encoder(layer, ew, dev)
    dec_path = resolve_decoder(decoder, layer, dev)   # as the CLI: its default for the device unless named
    dec = load_decoder(dec_path, encoder_id=ew.encoder_id, device=dev)
    int8 = backend == "onnx-int8"    # the CLI's --backend onnx --int8: INT8 graphs (export/int8.py)
    args = ap.Namespace(backend="onnx" if int8 else backend, fp16=fp16, layer=layer, channels_last=channels_last,
                        cuda_graph=cuda_graph, int8=int8, size=size)
    enc_e, dec_e = make_engines(args, enc, dec, dec_path, ew, dev)
    bank = StyleBank(enc_e, regions, device=dev)
    # --fixed-regions: one synthetic label map, resized to the style and to the frames (whose masks the
    # label-map segmenter makes once per size, so the segment stage costs next to nothing)
    label_map = synthetic_label_map(360, 640, regions) if fixed_regions and regions != "none" else None
    bank.add(DEMO_STYLE, label_map=label_map)
    seg = make_segmenter(regions, static=static, label_map=label_map)
    st = Stylizer(StylizerConfig(layer=layer, mode=mode, size=size, deflicker=deflicker), enc_e, dec_e, bank, dev)
    return st, seg


def time_frames(st, seg, frames: list, size: tuple[int, int], device: str, warmup: int = 3) -> dict:
    """Median milliseconds per stage over ``frames`` (after ``warmup`` runs of the first one)."""
    from realtime.output import NullSink
    sink = NullSink()
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        st.times.sync = sync          # each stage waits for the GPU before it is read
    rows = []
    for i, f in enumerate([frames[0]] * warmup + frames):
        t = time.perf_counter()
        frame = cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if f.shape[1::-1] != tuple(size) else f
        ms = {"decode": (time.perf_counter() - t) * 1000}
        t = time.perf_counter()
        regions_map = seg(frame)
        ms["segment"] = (time.perf_counter() - t) * 1000
        t_all = time.perf_counter()
        out = st.stylize(frame, regions_map)
        sync()
        ms.update(st.times.ms)
        t = time.perf_counter()
        sink.send(out)
        ms["output"] = (time.perf_counter() - t) * 1000
        ms["total"] = sum(ms[k] for k in STAGES if k in ms)
        ms["stylize"] = (time.perf_counter() - t_all) * 1000
        if i >= warmup:
            rows.append(ms)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def profile_frames(st, seg, frames: list, size: tuple[int, int], device: str, rows: int = 25) -> str:
    """torch.profiler over the stylizer on ``frames`` (after timing, so warm): the operators and
    kernels that take the host's and the GPU's time, each call marked ``stylize``."""
    from torch.profiler import ProfilerActivity, profile, record_function
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    small = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames]
    maps = [seg(f) for f in small]
    with profile(activities=acts) as prof:
        for f, m in zip(small, maps):
            with record_function("stylize"):
                st.stylize(f, m)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    avg = prof.key_averages()
    out = [avg.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)]
    if torch.device(device).type == "cuda":
        out.append(avg.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))
    return "\n".join(out)


def bench_one(backend: str, device: str, fp16: bool, height: int, frames: list, layer: str, mode: str,
              regions: str, warmup: int = 3, profile: bool = False, deflicker: float = 0.0,
              decoder: str | None = None, channels_last: bool | None = None, cuda_graph: bool | None = None,
              fixed_regions: bool = False) -> dict:
    width = round(height * 16 / 9) // 2 * 2
    st, seg = build(backend, device, fp16, layer, mode, regions, (width, height), deflicker=deflicker,
                    decoder=decoder, channels_last=channels_last, cuda_graph=cuda_graph, fixed_regions=fixed_regions)
    try:
        med = time_frames(st, seg, frames, (width, height), device, warmup)
        if profile:
            print(f"\n== profile: {backend}/{device}/{'fp16' if fp16 else 'fp32'} {width}x{height}, "
                  f"{len(frames)} frames\n{profile_frames(st, seg, frames, (width, height), device)}", flush=True)
    finally:
        seg.close()
    prec = "fp16" if fp16 else "int8" if backend == "onnx-int8" else "fp32"
    return {"backend": backend, "device": device, "precision": prec, "height": height,
            "width": width, "layer": layer, "mode": mode, "regions": regions,
            "segmenter": type(seg).__name__, "frames": len(frames),
            "deflicker": deflicker, "decoder": decoder_name(decoder, layer, device),
            # what the engines did run in (make_engines decides), read back from them
            "channels_last": getattr(st.encoder, "memory_format", None) == torch.channels_last,
            "cuda_graph": bool(getattr(st.encoder, "cuda_graph", False)),
            "median_ms": med, "fps": 1000.0 / med["total"]}


def decoder_name(decoder: str | None, layer: str, device: str) -> str:
    from engines.decoder import resolve_decoder
    return resolve_decoder(decoder, layer, device).name


def markdown(results: list[dict]) -> str:
    head = "| backend | device | prec | size | " + " | ".join(STAGES) + " | total ms | FPS |"
    lines = [head, "|" + "---|" * (len(STAGES) + 6)]
    for r in results:
        m = r["median_ms"]
        lines.append(f"| {r['backend']} | {r['device']} | {r['precision']} | {r['width']}x{r['height']} | " +
                     " | ".join(f"{m.get(k, 0):.1f}" for k in STAGES) + f" | {m['total']:.1f} | {r['fps']:.1f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in sorted({(r["backend"], r["device"], r["precision"]) for r in results}):
        rs = [r for r in results if (r["backend"], r["device"], r["precision"]) == key]
        ax.plot([r["height"] for r in rs], [r["fps"] for r in rs], marker="o", label="/".join(key))
    ax.set_xlabel("processing height (16:9)")
    ax.set_ylabel("frames per second")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    info = machine_info()
    ax.set_title(f"stylecam FPS, {info.get('gpu') or info['cpu']} ({info['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    keep_freed_memory()              # as the CLI, so that it times what a user runs (STYLECAM_MALLOC=system: not)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="torch,onnx",
                   help="comma-separated: torch, onnx, onnx-int8 (the CLI's --int8: INT8 graphs), tensorrt "
                        "(default %(default)s)")
    p.add_argument("--devices", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="comma-separated: cpu, cuda (default: cuda where there is one, else cpu)")
    p.add_argument("--fp16", action="store_true", help="also FP16 (CUDA only)")
    p.add_argument("--sizes", type=int_list(16), default="240,360,480,720,1080",
                   help="processing heights, comma-separated; each frame 16:9 (default %(default)s)")
    p.add_argument("--frames", type=int_at_least(1), default=20,
                   help="frames timed per configuration, after warm-up ones (default %(default)s)")
    p.add_argument("--layer", default="relu3_1", choices=["relu3_1", "relu4_1"], help="VGG layer (default relu3_1)")
    p.add_argument("--mode", default="adain", choices=["linear", "adain", "wct", "gram"],
                   help="statistics matched per region (default adain, the CLI's)")
    p.add_argument("--regions", default="portrait", choices=["none", "person", "portrait"],
                   help="semantic regions (default portrait, the CLI's)")
    p.add_argument("--deflicker", type=float, default=0.0,
                   help="output deflicker strength (the CLI's default is 0.5; its time is in 'composite')")
    p.add_argument("--decoder", default=None, metavar="auto|small|wide|PATH",
                   help="decoder, as stylecam's --decoder (default auto: the small one, on every device)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="the PyTorch engines in channels_last (NHWC) layout, which cuDNN's FP16 convolutions "
                        "use natively, or not (default: the CLI's, on CUDA only; the other backends ignore it)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="the PyTorch engines on CUDA replayed from a CUDA graph captured once per input shape, "
                        "or launched from Python (default: the CLI's, on for CUDA; README 'On a GPU')")
    p.add_argument("--fixed-regions", action="store_true",
                   help="segment the style and every frame by a fixed synthetic portrait label map (a person "
                        "ellipse, a face inside it) instead of MediaPipe, made once per size: the K-region "
                        "pipeline timed where MediaPipe is not installed, with no segmentation cost")
    p.add_argument("--threads", type=int_at_least(0), default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results and the machine's record to this JSON file")
    p.add_argument("--png", default=None, help="draw FPS against size to this PNG file")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 240p, 3 frames, torch only (sets --sizes, --frames, --backends unless given)")
    p.add_argument("--profile", type=int, default=0, metavar="HEIGHT",
                   help="also print a torch.profiler table (host time, and GPU time on CUDA) of the stylizer "
                        "at this processing height, for every backend and precision")
    a = p.parse_args(argv)
    check_outputs(p, a.json, a.png)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        apply_quick(p, a, argv, backends="torch", sizes=[240], frames=3)
    backends = [b for b in a.backends.split(",") if b]
    unknown = set(backends) - {"torch", "onnx", "onnx-int8", "tensorrt"}
    if unknown or not backends:
        p.error(f"--backends takes torch, onnx, onnx-int8, tensorrt; got {a.backends!r}")
    devices = [d for d in a.devices.split(",") if d]
    if set(devices) - {"cpu", "cuda"} or not devices:
        p.error(f"--devices takes cpu, cuda; got {a.devices!r}")
    if "cuda" in devices and not torch.cuda.is_available():
        p.error("--devices cuda: no CUDA GPU is visible to PyTorch")
    check_decoder(p, a.decoder, a.layer)
    if "tensorrt" in backends:
        try:
            from engines.trt_engine import tensorrt_or_error
            tensorrt_or_error()
        except RuntimeError as e:
            print(f"skipping tensorrt: {e}", file=sys.stderr)
            backends.remove("tensorrt")
    frames = load_frames(a.frames)
    results = []
    for dev in devices:
        for b in backends:
            if b == "tensorrt" and dev == "cpu":      # the CLI refuses it too: the engines run on the GPU
                print("skipping tensorrt on the cpu device: TensorRT runs on CUDA", file=sys.stderr)
                continue
            for fp16 in ([False, True] if a.fp16 and dev == "cuda" else [False]):
                for h in a.sizes:
                    r = bench_one(b, dev, fp16, h, frames, a.layer, a.mode, a.regions, profile=h == a.profile,
                                  deflicker=a.deflicker, decoder=a.decoder, channels_last=a.channels_last,
                                  cuda_graph=a.cuda_graph, fixed_regions=a.fixed_regions)
                    results.append(r)
                    print(f"{b}/{dev}/{r['precision']} {r['width']}x{h}: {r['median_ms']['total']:.1f} ms, "
                          f"{r['fps']:.2f} FPS", flush=True)
    info = machine_info(argv, __file__)
    print(f"\n{markdown(results)}\n\nmachine: {info.get('gpu') or ''} {info['cpu']} ({info['cores']} cores), "
          f"torch {info['torch']}, {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "results": results})
    if a.png:
        plot(results, a.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
