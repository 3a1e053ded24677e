"""``stylecam`` / ``python run_cam.py``: the command line.

Exit status: 0 on success (Ctrl-C while frames flow too: the outputs are finalised), 2 with one
line on stderr for bad input, 1 with one line for an output that could not be written (a full disk,
say) and for an unexpected failure (with a traceback), 130 for Ctrl-C before the frames flow.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("stylecam")

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS / "demo_clip.mp4"
DEMO_STYLE = ASSETS / "demo_style.jpg"
GRAM_STILL_STEPS = 30      # gram mode's descent steps on still images (video: 10 a frame, warm-started)
DEFAULT_DEFLICKER = 0.5     # --deflicker on video, on every device (see run())
DEFAULTS = {"layer": "relu3_1", "mode": "adain", "strength": 1.0, "regions": "portrait", "size": None,
            "method": "decoder", "device": "auto", "backend": "auto"}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("stylecam")
    except PackageNotFoundError:           # run from a source tree that was not installed
        return "(not installed)"


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stylecam",
        description="Repaint a live portrait in the style of a painted portrait, region by region\n"
                    "(face to face, hair and body to body, background to background).\n"
                    "Lu et al., ICCV 2017: VGG features reconstructed inside each region, decoded by a\n"
                    "trained decoder.",
        epilog="Examples:\n"
               "  stylecam --demo --out demo.mp4            bundled clip and style, no camera needed\n"
               "  stylecam --style painting.jpg             live from camera 0 in a window\n"
               "  stylecam --source me.jpg --style p.jpg --out out.png\n"
               "  stylecam --source me.jpg --style p.jpg --out out.png --method gatys   (slow reference)\n"
               "  stylecam export --help                    ONNX / TensorRT export\n"
               "Window hotkeys: q/Esc quit, n/p next/previous style, m mode, +/- strength, Space effect on/off,\n"
               "c keep colours, r reset, s snapshot (a PNG in the current folder).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--source", default=None, help="camera index (default 0), a video file, a folder or glob of images, or one image")
    a("--style", action="append", default=[], metavar="PAINTING",
      help="style painting; repeat for several styles, switched live with n/p")
    a("--style-regions", action="append", default=[], metavar="LABELS.png",
      help="label map for the matching --style, by position (colours: background black, person red "
           "(255,0,0), face green (0,255,0)); overrides MediaPipe on that painting; `auto` keeps MediaPipe "
           "for it (a map for the second painting only: --style-regions auto --style-regions MAP)")
    a("--content-regions", default=None, metavar="LABELS.png",
      help="label map for the content, instead of MediaPipe: for a still image (on a video it is one fixed map "
           "for every frame, with a warning; a map of another shape is stretched, with a warning)")
    a("--out", default=None, metavar="PATH",
      help=".mp4/.avi video, .png/.jpg image, or a folder for image sequences; written under a temporary name "
           "and renamed when complete (default: a still image goes to stylecam_out.png, --demo to demo_out.mp4)")
    a("--vcam", action="store_true",
      help='send frames to a virtual camera (needs pyvirtualcam: pip install -e ".[vcam]" in the project)')
    a("--no-window", action="store_true", help="do not open a preview window")
    a("--device", choices=["auto", "cpu", "cuda"], default=None, help="default: auto (CUDA when available)")
    a("--backend", choices=["auto", "torch", "onnx", "tensorrt"], default=None,
      help="network runtime; auto (default): ONNX Runtime on the CPU (1.1-1.3x faster than PyTorch "
           "there on 2 cores, see the README's benchmarks/fps.py table), PyTorch on CUDA")
    a("--fp16", action="store_true", help="run the networks in FP16 (CUDA); statistics stay FP32")
    a("--int8", action="store_true",
      help="CPU with ONNX Runtime: run the networks as INT8 graphs (the encoder whole, relu3_1's decoder from "
           "its first upsampling on, relu4_1's whole with 8-bit weights), quantized once on first use "
           "(calibrated on the bundled demo images, then cached): 1.8-2.1x the FPS on 2 cores (240p 4.8 -> 9.4) "
           "for 0.16 dB of the held-out autoencoder's "
           "27.57 (README 'INT8 on the CPU', benchmarks/int8.py)")
    a("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
      help="PyTorch backend on CUDA: replay the networks from a CUDA graph captured once per input size "
           "(default on: with the full-width decoder a 720p FP16 frame took 7.7 ms instead of 8.5 on an H100; "
           "with the default decoder on an H200 it made no difference, 6.4 against 6.3 ms; see the README); "
           "--no-cuda-graph launches every kernel from Python instead")
    a("--method", choices=["decoder", "gatys"], default=None,
      help="decoder: fast feed-forward (default); gatys: slow image-space optimisation, the quality reference")
    a("--mode", choices=["linear", "adain", "wct", "gram"], default=None,
      help="statistics matched per region (default adain; linear is the paper's)")
    a("--strength", type=float, default=None, help="style strength 0..1 (default 1; 0 = plain autoencoder)")
    a("--keep-colors", action="store_true", help="transfer luminance only, keep the frame's colours")
    a("--deflicker", type=float, default=None, metavar="S",
      help="video: blend each frame with the motion-compensated previous output where the input agrees, "
           "0 <= S < 1 (0 = off; 0.5 makes the demo clip flicker 3.2x less, 0.6 4.3x, as little as its input; "
           "see the README); default 0.5 "
           "(on an H100 it costs about 1.5 ms a 720p frame, its optical flow running on a CPU thread beside "
           "the GPU's work: --deflicker 0 for the last few FPS); still images: never")
    a("--layer", choices=["relu3_1", "relu4_1"], default=None, help="VGG layer (default relu3_1)")
    a("--size", default=None, metavar="WxH",
      help="processing size, independent of the output size (WxH, or one number for the longer side); "
           "default: frames longer than 640 px are reduced to 640, smaller ones kept; gatys: 512")
    a("--regions", choices=["none", "person", "portrait"], default=None,
      help="semantic regions (default portrait: background, person, face)")
    a("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    a("--iterations", type=int, default=None, metavar="N",
      help="gatys: L-BFGS iterations (default 500, as in the paper); gram mode: descent steps per frame "
           "(default 10 for video, warm-started from the previous frame; 30 for still images); linear mode: "
           "run the paper's "
           "iteration N times instead of its exact closed form (it converges for --strength below 0.5)")
    a("--config", default=None, metavar="FILE.toml", help="defaults for any of these options, by option name")
    a("--demo", action="store_true",
      help="run on the bundled clip and style (no camera needed); writes demo_out.mp4 unless --out or --vcam")
    a("--decoder", default=None, metavar="auto|small|wide|PATH",
      help="decoder weights: auto (default) = small on every device (it reconstructs best); "
           "small = weights/decoder_LAYER.pt (half width plus four convolutions at the features' resolution); "
           "wide = weights/decoder_LAYER_wide.pt (full width, older and worse: 25.5 against 27.6 dB, "
           "~1.6x slower on the CPU; relu3_1 only); or a file")
    a("--encoder-weights", default=None, metavar="PATH",
      help="torchvision ImageNet VGG16/VGG19 weights file instead of the default HED VGG16")
    a("-q", "--quiet", action="store_true", help="warnings and errors only")
    a("--version", action="version", version=f"%(prog)s {package_version()}")
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill options not given on the command line from --config, then from DEFAULTS."""
    if args.config:
        import tomllib
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            cfg = tomllib.loads(path.read_bytes().decode("utf-8-sig"))    # TOML is UTF-8 on every OS
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: {e}") from e
        actions = {a.dest: a for a in parser._actions}
        for k, v in cfg.items():
            key = k.replace("-", "_")
            if key not in actions or key in ("config", "help"):
                raise UsageError(f"{path}: unknown option {k!r}")
            v = config_value(path, k, actions[key], v)
            if getattr(args, key) in (None, False, []):       # the command line wins
                setattr(args, key, v)
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def config_value(path, name: str, action: argparse.Action, v):
    """A --config value checked as the command line would check it: a switch takes true or false; a
    value goes through the option's type (a number from a string, a string from a number) and must
    be one of its choices; a repeatable option (--style) takes one value or a list."""
    if action.nargs == 0:                                   # store_true / --x/--no-x switches
        if not isinstance(v, bool):
            raise UsageError(f"{path}: {name} must be true or false, got {v!r}")
        return v
    if isinstance(action, argparse._AppendAction):
        return [config_value(path, name, argparse.Action([], action.dest, type=action.type), x)
                for x in (v if isinstance(v, list) else [v])]
    if isinstance(v, (list, dict)) or isinstance(v, bool) and action.type is not bool:
        raise UsageError(f"{path}: {name} takes one value, got {v!r}")
    try:
        v = action.type(v) if action.type is not None else str(v)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{path}: {name}: invalid value {v!r}") from e
    if action.choices is not None and v not in action.choices:
        raise UsageError(f"{path}: {name} must be one of {', '.join(map(str, action.choices))}, got {v!r}")
    return v


def pick_device(name: str):
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def channels_last_default(device) -> bool:
    """Whether the PyTorch engines run in channels_last (NHWC) when not told: on CUDA, yes.  cuDNN's
    FP16 convolutions are NHWC, and on NCHW tensors it converts around each one (1.2 of the 5.3 ms of
    GPU time of a 720p FP16 frame on the H100, session 7).  Session 8 timed both on the H100
    (benchmarks/fps.py; docs/results/fps_gpu_h100.json and fps_gpu_h100_nchw.json): FP16 480p 5.5 ms against 6.8,
    720p 7.6 against 9.4, 1080p 14.9 against 17.3; FP32 6.1 / 9.8 / 18.6 against 6.5 / 10.4 / 21.6.
    On the CPU (session 21, AMD EPYC 2 cores, malloc keeping freed memory: `benchmarks/fps.py --backends
    torch --sizes 240,360,480,720 --frames 4 [--channels-last]`) it was 1.17-1.25x faster at 240p-480p
    (209 against 254 ms a frame at 240p) but slower at 720p (2.70 s against 2.31, its decoder 831 ms
    against 528): mixed, so left off there -- and the CPU's default backend is ONNX Runtime anyway."""
    return device.type == "cuda"


def cuda_graph_default(device) -> bool:
    """Whether the PyTorch engines replay the networks from CUDA graphs when not told: on CUDA, yes.
    A frame is bound by the host's kernel launches there (session 8's torch.profiler table of a 720p
    FP16 frame on the H100: ~9 ms of host time for ~5 ms of GPU time).  Session 11 timed both on the
    H100 (benchmarks/fps.py [--cuda-graph]; docs/results/fps_gpu_h100_session11.json and _graph.json):
    FP16 480p 5.0 ms against 6.2, 720p 7.7 against 8.5, 1080p 14.9 against 14.5 (a tie); FP32 5.8 /
    9.1 / 18.2 against 6.7 / 9.8 / 18.9.  CUDA graphs do not exist on the CPU."""
    return device.type == "cuda"


def live_engine_sizes(size: tuple[int, int] | None) -> argparse.Namespace:
    """The image sizes (HxW: min, opt, max) a live TensorRT engine takes. Both networks see frames and
    paintings of any orientation: from 16 pixels a side (--size's smallest) up to the larger of a painting's
    STYLE_MAX_SIDE and the processing size's longer side (``size``, parsed --size; else StylizerConfig's
    max_side), square. (The export command's default profile, 240x320 to 1080x1920, refused portrait
    paintings and frames and small stills here.) The cache names an engine by its profile: one per --size."""
    from .images import MIN_SIDE
    from .style import STYLE_MAX_SIDE
    from .stylizer import StylizerConfig
    long = StylizerConfig.max_side if size is None else max(size)
    side = max(STYLE_MAX_SIDE, long)
    return argparse.Namespace(min=(MIN_SIDE, MIN_SIDE), opt=(min(480, side), min(640, side)), max=(side, side))


def make_engines(args, enc, dec, dec_path, ew, device):
    """Wrap the encoder and decoder in the engines of --backend (exports cached on first use)."""
    from engines.base import load_engine
    from engines.cache import cached_export
    from engines.weights import sha256_file
    if args.backend == "auto":
        args.backend = "torch" if device.type == "cuda" else "onnx"
    if getattr(args, "cuda_graph", None) and (args.backend != "torch" or device.type != "cuda"):
        log.warning("--cuda-graph applies to the PyTorch backend on CUDA only; ignored (backend %s, device %s)",
                    args.backend, device.type)
    if args.backend == "torch":
        prec = "fp16" if args.fp16 else "fp32"
        # channels_last: the device's default (channels_last_default) unless benchmarks/fps.py's
        # --channels-last / --no-channels-last says otherwise; cuda_graph: the device's default
        # (cuda_graph_default) unless --cuda-graph / --no-cuda-graph says otherwise
        cl = getattr(args, "channels_last", None)
        cl = channels_last_default(device) if cl is None else bool(cl)
        graph = getattr(args, "cuda_graph", None)
        graph = cuda_graph_default(device) if graph is None else bool(graph)
        return (load_engine("torch", device, prec, module=enc, channels_last=cl, cuda_graph=graph),
                load_engine("torch", device, prec, module=dec, channels_last=cl, cuda_graph=graph))
    profile_e = profile_d = None
    if args.backend == "tensorrt":
        from export.__main__ import image_profile
        from .images import parse_size
        size = getattr(args, "size", None)          # --size's text (the CLI) or a parsed (W, H) (benchmarks)
        ns = live_engine_sizes(size if isinstance(size, tuple) else parse_size(size))
        profile_e, profile_d = image_profile("encoder", args.layer, ns), image_profile("decoder", args.layer, ns)
    int8 = bool(getattr(args, "int8", False))

    nets = {"encoder": dict(module=enc, profile=profile_e, weights_key=ew.encoder_id),
            "decoder": dict(module=dec, profile=profile_d, weights_key=ew.encoder_id + sha256_file(dec_path),
                            encoder=enc, decoder_path=dec_path)}

    def export(what):
        return cached_export(what=what, layer=args.layer, backend=args.backend, fp16=args.fp16, int8=int8,
                             device=device, **nets[what])

    def load(what):
        path = export(what)
        cached = path.exists() and path.stat().st_mtime < started     # built by an earlier run, not this one
        try:
            return load_engine(path, device)
        except RuntimeError as e:
            if args.backend != "tensorrt" or not cached or "could not load" not in str(e):
                raise
            # a cached engine this TensorRT or driver cannot load (same version string, new build): once again
            log.warning("%s; building it again", e)
            path.unlink(missing_ok=True)
            return load_engine(export(what), device)
    started = time.time()
    return load("encoder"), load("decoder")


# --style-regions auto: MediaPipe for that painting (label maps pair with the --style images by position,
# so a map for the second painting alone is `--style-regions auto --style-regions b_labels.png`)
AUTO_REGIONS = "auto"


def style_label_map(maps: list[str], i: int) -> str | None:
    """The label map given for the i-th --style, or None (MediaPipe) when none or ``auto`` was."""
    return maps[i] if i < len(maps) and maps[i] != AUTO_REGIONS else None


def check_inputs(args: argparse.Namespace, source, single: bool, size, device) -> list:
    """Before any network loads (a GPU's first run exports and builds its engines first): every painting
    readable and large enough, every label map readable and valid, a content map that fits its source, and
    a processing size that fits in memory -- each a one-line error (or warning) at once. Returns the
    paintings as read, for the style bank (or gatys) to use rather than read again."""
    from engines.memory import check_processing_size
    from .images import read_image
    from .segment import REGION_SETS, LabelMapSegmenter
    from .style import check_style_size
    from .stylizer import StylizerConfig, processing_size
    paintings = []
    for s in args.style:
        paintings.append(read_image(s))
        try:
            check_style_size(paintings[-1], s)
        except ValueError as e:
            raise UsageError(str(e)) from None
    maps = [*(m for m in args.style_regions if m != AUTO_REGIONS),
            *([args.content_regions] if args.content_regions else [])]
    if maps and args.regions == "none":
        raise UsageError("a label map (--style-regions, --content-regions) needs --regions person or portrait")
    segs = {m: LabelMapSegmenter(m, REGION_SETS[args.regions]) for m in maps}     # reads and validates each
    if args.content_regions:
        if not single:
            log.warning("--content-regions: one fixed map for every frame of %s (it suits a still image; a "
                        "moving subject leaves its regions)", args.source)
        else:
            lh, lw = segs[args.content_regions].label.shape[:2]
            h, w = source.frame_hw
            if abs(lw / lh - w / h) > 0.02 * (w / h):
                log.warning("--content-regions %s is %dx%d and the image %dx%d: the map is stretched to fit",
                            args.content_regions, lw, lh, w, h)
    hw = getattr(source, "frame_hw", None)
    if hw is not None and args.method != "gatys":
        check_processing_size(*processing_size(*hw, size, StylizerConfig.max_side), device)
    return paintings


def run(args: argparse.Namespace) -> int:
    import torch

    from engines.decoder import load_decoder, resolve_decoder
    from engines.weights import build_encoder, load_encoder_weights
    from .capture import ImageSource, open_source
    from .images import fit_size, parse_size, write_image, bgr_to_tensor, tensor_to_bgr
    from .output import VirtualCamSink, WindowSink, check_writable, output_kind, sink_for_path
    from .pipeline import Pipeline
    from .reconstruct import LINEAR_ITERATION_MAX_STRENGTH, linear_iteration_converges
    from .segment import make_segmenter
    from .style import StyleBank
    from .stylizer import Stylizer, StylizerConfig

    if args.demo:
        if not args.style:
            args.style = [str(DEMO_STYLE)]
        if args.source is None:
            args.source = str(DEMO_CLIP)
        if args.out is None and not args.vcam:
            args.out = "demo_out.mp4"
    if args.source is None:
        args.source = "0"                  # camera 0 (not in DEFAULTS: --demo replaces only an unset one)
    if not args.style:
        raise UsageError("give a painting with --style PAINTING (or run --demo)")
    for s in args.style:
        if Path(s).is_dir():
            raise UsageError(f"--style {s} is a folder: give one painting per --style (repeat it for several)")
        if not Path(s).is_file():
            raise FileNotFoundError(f"style image not found: {s}")
    if len(args.style_regions) > len(args.style):
        raise UsageError("more --style-regions than --style images")
    if not 0.0 <= args.strength <= 1.0:
        raise UsageError(f"--strength must be between 0 and 1, got {args.strength}")
    if args.deflicker is not None and not 0.0 <= args.deflicker < 1.0:
        raise UsageError(f"--deflicker must be at least 0 and below 1, got {args.deflicker}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError("--max-frames must be at least 1")
    if args.iterations is not None and args.iterations < 0:
        raise UsageError("--iterations must be >= 0")
    if (args.mode == "linear" and args.method != "gatys" and args.iterations is not None
            and not linear_iteration_converges(args.strength)):
        raise UsageError(f"--mode linear --iterations N runs the paper's iteration, which converges only for "
                         f"--strength below {LINEAR_ITERATION_MAX_STRENGTH} (beta = s/(1-s) < 1); give one, or drop "
                         f"--iterations for the exact closed form, its limit, at any strength")
    if args.iterations is not None and args.method != "gatys" and args.mode not in ("linear", "gram"):
        log.warning("--iterations applies to --method gatys and to the linear and gram modes; %s ignores it",
                    args.mode)
    if args.vcam:                        # before any network loads, like --out
        VirtualCamSink(30.0).close()
    if args.backend == "tensorrt":
        from engines.trt_engine import tensorrt_or_error
        try:
            tensorrt_or_error()
        except RuntimeError as e:
            raise UsageError(str(e)) from e
    device = pick_device(args.device)
    if args.backend == "tensorrt" and device.type != "cuda":
        raise UsageError("--backend tensorrt runs the networks on the GPU: not with --device cpu (use "
                         "--backend onnx or torch there)")
    if args.fp16 and device.type != "cuda":
        raise UsageError("--fp16 needs a CUDA GPU (--device cuda)")
    if args.int8 and (device.type != "cpu" or args.backend not in ("auto", "onnx") or args.method == "gatys"):
        raise UsageError("--int8 is for the CPU with ONNX Runtime (--device cpu --backend onnx), the decoder method")
    size = parse_size(args.size)

    source = open_source(args.source)
    single = isinstance(source, ImageSource)
    if args.method == "gatys" and not single:
        raise UsageError("--method gatys optimises one image at a time: give --source IMAGE")
    # before any network loads, so a bad --out fails at once rather than after the models are built
    if args.out:
        kind = output_kind(args.out, many_frames=not single)
        if kind != "image" and args.method == "gatys":
            raise UsageError("--method gatys writes one image: give --out NAME.png or .jpg")
        check_writable(args.out, kind, inputs=(args.source, *getattr(source, "files", ()), *args.style,
                                               *args.style_regions, args.content_regions))
    paintings = check_inputs(args, source, single, size, device)

    ew = load_encoder_weights(args.encoder_weights)
    if args.method == "gatys":
        from .gatys import gatys
        enc = build_encoder("relu4_1", ew, device)
        content = source.frame
        h, w = content.shape[:2]
        ph, pw = fit_size(h, w, size or (512, 0))
        from engines.memory import check_processing_size
        check_processing_size(ph, pw, device)
        import cv2
        c_small = cv2.resize(content, (pw, ph), interpolation=cv2.INTER_AREA)
        style_img = paintings[0]                           # read and size-checked by check_inputs
        sh, sw = fit_size(*style_img.shape[:2], (max(ph, pw), 0))
        style_img = cv2.resize(style_img, (sw, sh), interpolation=cv2.INTER_AREA)
        cm = sm = None
        if args.regions != "none":
            seg = make_segmenter(args.regions, static=True, label_map=args.content_regions)
            cm = torch.from_numpy(seg(c_small)); seg.close()
            seg = make_segmenter(args.regions, static=True,
                                 label_map=style_label_map(args.style_regions, 0))
            sm = torch.from_numpy(seg(style_img)); seg.close()
        out = gatys(enc, bgr_to_tensor(c_small, device), bgr_to_tensor(style_img, device),
                    cm, sm, iterations=500 if args.iterations is None else args.iterations,
                    style_weight=5.0 * args.strength / max(1e-6, 1 - 0.8 * args.strength), progress=not args.quiet)
        img = tensor_to_bgr(out)
        if args.keep_colors:
            from .images import keep_colors
            img = keep_colors(img, c_small)
        target = args.out or "stylecam_out.png"
        write_image(target, cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
        print(target)
        return 0

    enc = build_encoder(args.layer, ew, device)
    dec_path = resolve_decoder(args.decoder, args.layer, device)
    dec = load_decoder(dec_path, encoder_id=ew.encoder_id, device=device)
    if dec.layer != args.layer:
        raise UsageError(f"{dec_path} is a {dec.layer} decoder but --layer is {args.layer}")
    enc, dec = make_engines(args, enc, dec, dec_path, ew, device)
    if device.type == "cuda" and args.mode in ("linear", "adain", "wct", "gram"):
        from . import kernels
        kernels.available()       # the fused kernel built now (once, about two minutes), not inside the first frame
    log.info("networks on %s: encoder %s %s, decoder %s %s (%s)", device.type, enc.kind,
             getattr(enc, "precision", "fp32"), dec.kind, getattr(dec, "precision", "fp32"), dec_path.name)
    if device.type == "cpu" and not args.int8 and not single:
        log.info("on the CPU, --int8 runs about twice as fast for a little quality (README: INT8 on the CPU)")
    bank = StyleBank(enc, args.regions, device=device)
    for i, s in enumerate(args.style):
        bank.add(s, style_label_map(args.style_regions, i), image=paintings[i])
    # 0.5 on every device since session 8: on the H100 the device deflicker (flow on a worker thread)
    # cost 1.5 ms a 720p FP16 frame (10.9 ms against 9.4, benchmarks/fps.py --deflicker 0.5), where
    # with the flow in line it had cost 8.6 ms (session 7), which had kept it off on CUDA
    deflicker = 0.0 if single else args.deflicker if args.deflicker is not None else DEFAULT_DEFLICKER
    iterations = args.iterations if args.mode in ("linear", "gram") else None
    if args.mode == "gram" and iterations is None and single:
        # a still has no previous frame to warm-start from: 30 steps instead of a frame's 10 (5 held-out
        # pairs at 256 px: VGG style loss 0.64 -> 0.44, MobileNet 0.040 -> 0.032, 1.4 -> 3.7 s on one thread;
        # python benchmarks/quality.py --methods gram,gram-iter30, session 7)
        iterations = GRAM_STILL_STEPS
    cfg = StylizerConfig(layer=args.layer, mode=args.mode, strength=args.strength, keep_colors=args.keep_colors,
                         size=size, iterations=iterations,
                         deflicker=deflicker)
    stylizer = Stylizer(cfg, enc, dec, bank, device)
    segmenter = make_segmenter(args.regions, static=single, label_map=args.content_regions)

    sinks = []
    if args.out:
        sinks.append(sink_for_path(args.out, source.fps, many_frames=not single))
    if args.vcam:
        sinks.append(VirtualCamSink(source.fps))
    window = None
    if not args.no_window and not single:
        try:
            window = WindowSink()
        except RuntimeError as e:
            if not sinks:
                raise UsageError(f"{e}") from e
            log.info("no display for a preview window: running without one (--no-window says so)")
    if not sinks and window is None:
        if single:
            sinks.append(sink_for_path("stylecam_out.png", 1, False))
            args.out = "stylecam_out.png"
        else:
            raise UsageError("nothing to show or write: drop --no-window, or add --out PATH or --vcam")
    pipe = Pipeline(source, segmenter, stylizer, sinks, window, args.max_frames, progress=not args.quiet)
    with stop_signals_interrupt():
        stats = pipe.run()
    if stats["frames"] == 0 and stats["interrupted"]:
        raise KeyboardInterrupt                 # before the first frame: as Ctrl-C while loading
    if stats["frames"] == 0:
        raise UsageError(f"no frame could be read from {args.source}")
    if getattr(source, "gave_up", False):      # outputs are finalised; a script must still see it failed
        print(f"stylecam: error: camera {args.source} lost after {stats['frames']} frame(s); what was made is "
              f"written", file=sys.stderr)
        return 1
    log.info("%d frame(s), %.2f FPS; per stage (ms): %s", stats["frames"], stats["fps"],
             ", ".join(f"{k} {v:.1f}" for k, v in stats["ms"].items()))
    if args.out:
        print(args.out)
    return 0


@contextlib.contextmanager
def stop_signals_interrupt():
    """While frames flow, SIGTERM and SIGHUP (``kill``, a closed terminal, a service stop) end the run as
    Ctrl-C does: outputs finalised (a recording used to be lost whole: its temporary file never renamed,
    its index never written)."""
    def stop(signum, frame):
        for sig in sigs:                   # one is enough: a second (a closed terminal sends SIGHUP twice)
            signal.signal(sig, signal.SIG_IGN)     # must not break into the outputs' finalising
        raise KeyboardInterrupt
    # SIGBREAK: Windows' Ctrl-Break, and how scripts stop a console program there (it has no SIGHUP)
    sigs = [sig for sig in (getattr(signal, name, None) for name in ("SIGTERM", "SIGHUP", "SIGBREAK"))
            if sig is not None]
    if threading.current_thread() is not threading.main_thread():      # signals reach the main thread only
        yield
        return
    old = {sig: signal.signal(sig, stop) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def entry() -> int:
    """The ``stylecam`` command and ``run_cam.py``: main() with MediaPipe's start-up lines filtered out
    of the console (realtime/native_log.py; not with --verbose, nor for ``stylecam export``)."""
    argv = sys.argv[1:]
    if argv[:1] != ["export"] and not {"-v", "--verbose"} & set(argv):
        from .native_log import install
        install()
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        try:
            from export.__main__ import main as export_main
        except ImportError:
            print("stylecam: error: the export command is not available in this version", file=sys.stderr)
            return 2
        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")       # MediaPipe's native logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from engines.memory import keep_freed_memory
    keep_freed_memory()          # each frame reuses the last one's pages (engines/memory.py; STYLECAM_MALLOC=system: not)
    from engines.weights import WeightsError
    from .capture import SourceError
    try:
        apply_config(args, parser)
        return run(args)
    except (UsageError, FileNotFoundError, ValueError, WeightsError, SourceError) as e:
        print(f"stylecam: error: {e}".splitlines()[0] if not isinstance(e, WeightsError) else
              f"stylecam: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:     # Ctrl-C before the frames flow (while loading); during them the pipeline
        print("stylecam: interrupted", file=sys.stderr)      # finalises its outputs and returns normally
        return 130
    except OSError as e:          # an output that could not be written (OutputError), a full disk, ...
        print(f"stylecam: error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "virtual camera" in str(e) or "pyvirtualcam" in str(e) or "display" in str(e):
            print(f"stylecam: error: {e}", file=sys.stderr)
            return 2
        raise
