"""An INT8 encoder for ONNX Runtime on the CPU: static quantization of the FP32 ONNX graph.

The encoder is most of a CPU frame (240p with ONNX Runtime: 115 of 188 ms, README), and it is the
part that quantizes well: ONNX Runtime's static quantization (QDQ format, INT8 weights per output
channel, UINT8 activations whose ranges are calibrated on images; Jacob et al. 2018, "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference") runs it ~3.5x
faster on an AVX-512 VNNI CPU and costs the held-out autoencoder 0.15 dB (benchmarks/int8.py). The
decoder stays FP32: quantized the same way it lost ~1 dB (a session-24 probe at 384 px), its errors
landing on the pixels.

Calibration uses only what the package bundles (the demo clip's frames, the demo painting and their
mirror images), so an INT8 encoder can be built anywhere, once, and is cached beside the FP32 export
(engines.cache). CPUs without VNNI multiply UINT8 by INT8 with an instruction (VPMADDUBSW) whose
16-bit sums can saturate; there the weights are quantized to 7 bits (``reduce_range``), as ONNX
Runtime's documentation advises (the same 0.14 dB here).
"""
from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 8      # demo-clip frames, evenly spaced, plus the painting; each also mirrored


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has AVX-512 VNNI or AVX-VNNI (Linux: /proc/cpuinfo; elsewhere assumed
    not: 7-bit weights, as accurate here, benchmarks/int8.py)."""
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


def calibration_images(frames: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Encoder inputs (1 x 3 x H x W float32 BGR in [0, 1], sides multiples of 8) from the bundled
    demo clip and painting, each also mirrored, at the clip's 240-line size."""
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
        if h > 240:
            img = cv2.resize(img, (round(w * 240 / h), 240), interpolation=cv2.INTER_AREA)
        h, w = img.shape[0] // 8 * 8, img.shape[1] // 8 * 8
        for im in (img[:h, :w], img[:h, :w, ::-1]):
            x = np.ascontiguousarray(im[:, :, :3]).astype(np.float32) / 255.0
            out.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    return out


def quantize_encoder(fp32_onnx: str | Path, out: str | Path, reduce_range: bool | None = None) -> Path:
    """Write an INT8 copy of the FP32 encoder graph ``fp32_onnx`` to ``out`` (atomically, with the
    ``stylecam`` metadata kept and its precision set to ``int8``); ``reduce_range`` None: 7-bit
    weights unless the CPU has VNNI (cpu_has_vnni)."""
    import json

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    from realtime.images import publish

    fp32_onnx, out = Path(fp32_onnx), Path(out)
    src = onnx.load(str(fp32_onnx), load_external_data=False)
    meta = {p.key: p.value for p in src.metadata_props}
    info = json.loads(meta.get("stylecam", "{}"))
    if info.get("network") != "encoder" or info.get("precision") != "fp32":
        raise ValueError(f"{fp32_onnx} is not an FP32 stylecam encoder export (its metadata says "
                         f"{info.get('network')!r}, {info.get('precision')!r})")
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    images = calibration_images()
    name = src.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(images)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {name: x}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8.") as work:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre))        # shape inference and folding, as ORT advises
        q = Path(work) / "int8.onnx"
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(q))
        calib = f"{len(images)} bundled demo images (clip frames, painting, mirrored)"
        info.update({"precision": "int8", "int8": {"reduce_range": bool(reduce_range), "calibration": calib}})
        del model.metadata_props[:]
        for k, v in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, json.dumps(info) if k == "stylecam" else v
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            onnx.save(model, tmp)
            publish(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    log.info("quantized the encoder to INT8 (%s-bit weights) -> %s", 7 if reduce_range else 8, out)
    return out
