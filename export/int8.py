"""INT8 networks for ONNX Runtime on the CPU: static quantization of the FP32 ONNX graphs.

The encoder is most of a CPU frame (240p with ONNX Runtime: 115 of 188 ms, README), and it
quantizes well: ONNX Runtime's static quantization (QDQ format, INT8 weights per output channel,
UINT8 activations whose ranges are calibrated on images; Jacob et al. 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference") runs it 3-4x faster on
an AVX-512 VNNI CPU and costs the held-out autoencoder 0.15 dB (benchmarks/int8.py). relu3_1's decoder
is quantized from its first upsampling on: its convolutions at the features' resolution stay FP32
(decoder_fp32_convs), since quantized they cost it 1.4 dB; the later ones cost 0.01. relu4_1's decoder
loses nothing either way (0.01 dB) and is quantized whole with 8-bit weights, which makes it 1.2-1.4x
faster (WHOLE_DECODER_LAYERS).

Calibration uses only what the package bundles (the demo clip's frames, the demo painting and their
colour-reversed copies; for the decoder, their encoder features), so INT8 graphs can be built anywhere, once,
and are cached beside the FP32 exports (engines.cache). x86 CPUs without VNNI multiply UINT8 by INT8
with an instruction (VPMADDUBSW) whose 16-bit sums can saturate; there the weights are quantized to
7 bits (``reduce_range``), as ONNX Runtime's documentation advises (default_reduce_range).
"""
from __future__ import annotations

import contextlib
import logging
import platform
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 8      # demo-clip frames, evenly spaced, plus the painting; each also colour-reversed
RECIPE = 2                  # raise when what quantize() makes changes: cached INT8 graphs are keyed by it
# Decoders quantized whole by default when the weights are 8-bit, measured by benchmarks/int8.py
# (docs/results/int8_cpu.json, AMD EPYC 2 cores, session 25): relu4_1's loses 0.01 dB held out whole as
# with its first stage FP32, and its ONNX Runtime time falls from 36 to 26 ms at 240p (127 -> 93 at 480p,
# 285 -> 225 at 720p); relu3_1's would lose 1.43 dB instead of 0.16, so it keeps its convolutions at the features'
# resolution FP32. With 7-bit weights (reduce_range) relu4_1's whole decoder scores as well held out
# (19.44 against 19.43 dB) but its worst pixel on the parity images is 0.14 of the output's range against
# 0.06 (beyond TOLERANCE['int8']), so there it keeps its first stage too.
WHOLE_DECODER_LAYERS = frozenset({"relu4_1"})


@contextlib.contextmanager
def _quiet(name: str):
    """Hold logger ``name`` at WARNING or above for a while (ONNX Runtime's quantizer logs an INFO line
    per graph, which would land in the CLI's log)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has AVX-512 VNNI or AVX-VNNI (Linux: /proc/cpuinfo; elsewhere assumed
    not: 7-bit weights, 0.16 dB lower for relu3_1 here, benchmarks/int8.py)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def default_reduce_range() -> bool:
    """Whether to quantize weights to 7 bits here: on an x86 CPU without VNNI, whose UINT8 x INT8
    instruction (VPMADDUBSW) can saturate its 16-bit sums; not on ARM, nor with VNNI (the guidance in
    onnxruntime.quantization.quantize_static's docstring, "Choosing parameters for CPU inference")."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return False
    return not cpu_has_vnni()


def calibration_images(frames: int = CALIBRATION_FRAMES, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Encoder inputs (1 x 3 x H x W float32 BGR in [0, 1], sides multiples of 8) from the bundled
    demo clip and painting at the clip's 240-line size, or all at ``size`` (h, w) for a graph of fixed
    size, each also with its colour channels reversed (BGR read as RGB: warm skin turns blue and the
    blue backdrop orange), so that the calibrated ranges cover more colours than one clip and one
    painting have."""
    import cv2
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP, DEMO_STYLE
    from realtime.images import read_image
    src = VideoFileSource(DEMO_CLIP)
    try:
        clip = [frame for frame, _ in src]
    finally:
        src.close()
    step = max(1, len(clip) // frames)
    images = clip[::step][:frames] + [read_image(DEMO_STYLE)]
    out = []
    for img in images:
        h, w = img.shape[:2]
        if size is not None:
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        elif h > 240:
            img = cv2.resize(img, (round(w * 240 / h), 240), interpolation=cv2.INTER_AREA)
        h, w = (img.shape[0], img.shape[1]) if size is not None else (img.shape[0] // 8 * 8, img.shape[1] // 8 * 8)
        for im in (img[:h, :w], img[:h, :w, ::-1]):          # as read, and colour-reversed
            x = np.ascontiguousarray(im[:, :, :3]).astype(np.float32) / 255.0
            out.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    return out


def decoder_fp32_convs(model) -> list[str]:
    """The decoder's convolutions at the features' own resolution: those before its first Resize
    (the graph is in topological order). They stay FP32: with them quantized too, relu3_1's held-out
    autoencoder loses 1.4 dB instead of 0.16 (benchmarks/int8.py, session 24) -- the regional tone
    the decoder gets wrong is decided there."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Resize":
            return names
        if node.op_type == "Conv":
            names.append(node.name)
    raise ValueError("this decoder graph has no Resize (upsampling) node: not a stylecam decoder")


def encoder_features(encoder, images: list[np.ndarray]) -> list[np.ndarray]:
    """The decoder's calibration inputs: ``encoder`` (a torch module or engine taking 1 x 3 x H x W
    BGR [0, 1] tensors) on the calibration images."""
    import torch
    with torch.no_grad():
        return [encoder(torch.from_numpy(x)).float().cpu().numpy() for x in images]


def quantize(fp32_onnx: str | Path, out: str | Path, *, encoder=None, reduce_range: bool | None = None,
             whole: bool | None = None) -> Path:
    """Write an INT8 copy of a stylecam FP32 ONNX graph to ``out`` (atomically; the ``stylecam``
    metadata kept, its precision set to ``int8``). An encoder is quantized whole, calibrated on
    calibration_images(); a decoder, calibrated on ``encoder``'s features of those images (``encoder``
    required), whole if ``whole``, else from its first upsampling on (decoder_fp32_convs); ``whole``
    None: whole for the layers of WHOLE_DECODER_LAYERS with 8-bit weights. ``reduce_range`` None:
    default_reduce_range()."""
    import json

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    from realtime.images import atomic_path

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    src = onnx.load(str(fp32_onnx), load_external_data=False)
    meta = {p.key: p.value for p in src.metadata_props}
    info = json.loads(meta.get("stylecam", "{}"))
    what = info.get("network")
    if what not in ("encoder", "decoder") or info.get("precision") != "fp32":
        raise ValueError(f"{fp32_onnx} is not an FP32 stylecam encoder or decoder export (its metadata says "
                         f"{what!r}, {info.get('precision')!r})")
    if what == "decoder" and encoder is None:
        raise ValueError("a decoder is calibrated on encoder features: give the encoder")
    if reduce_range is None:
        reduce_range = default_reduce_range()
    if whole is None:
        whole = info.get("layer") in WHOLE_DECODER_LAYERS and not reduce_range
    dims = [d.dim_value for d in src.graph.input[0].type.tensor_type.shape.dim[2:]]
    stride = int(info.get("stride", 1))       # image pixels per input cell: 1 for an encoder
    # a graph of fixed size (export --static) is calibrated at that size; a dynamic one at the clip's
    images = calibration_images(size=(dims[0] * stride, dims[1] * stride) if all(dims) else None)
    inputs = images if what == "encoder" else encoder_features(encoder, images)
    keep = [] if what == "encoder" or whole else decoder_fp32_convs(src)
    name = src.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {name: x}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8.") as work:
        pre = Path(work) / "pre.onnx"
        q = Path(work) / "int8.onnx"
        with _quiet("onnxruntime.quantization"):
            quant_pre_process(str(fp32_onnx), str(pre))        # shape inference and folding, as ORT advises
            quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=keep)
        model = onnx.load(str(q))
        calib = f"{len(images)} bundled demo images (clip frames, painting, colour-reversed copies)"
        info.update({"precision": "int8", "int8": {"reduce_range": bool(reduce_range), "calibration": calib,
                                                   "fp32_convs": keep}})
        del model.metadata_props[:]
        for k, v in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, json.dumps(info) if k == "stylecam" else v
        with atomic_path(out, ".onnx.tmp") as tmp:
            onnx.save(model, str(tmp))
    log.info("quantized the %s to INT8 (%s-bit weights%s) -> %s", what, 7 if reduce_range else 8,
             f", {len(keep)} convolutions kept FP32" if keep else "", out)
    return out
