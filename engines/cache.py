"""Exported models for the live command, built on first use and cached.

Cache paths are named by network, layer, precision, shape profile and a key over the
weights and the library versions, so a new decoder, a new TensorRT or a new torch gets a
fresh export instead of a stale one.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from .weights import cache_dir

log = logging.getLogger(__name__)


# Raised when what export_onnx or build_engine write changes (the graph's form, the builder's flags), so
# that cached files made by an earlier stylecam are not served: 2 = TF32 off in engines, TensorRT's
# strongly typed precision, the live profile of any orientation.
EXPORT_VERSION = 2


def _versions(backend: str, device=None) -> str:
    v = [f"stylecam-export{EXPORT_VERSION}", f"torch{torch.__version__}"]
    try:
        import onnx
        v.append(f"onnx{onnx.__version__}")
    except ImportError:
        pass
    if backend == "tensorrt":
        import tensorrt
        v.append(f"trt{tensorrt.__version__}")
        v.append(torch.cuda.get_device_name(device).replace(" ", "_"))       # the GPU it runs on
    return "-".join(v)


def cached_export(module, what: str, layer: str, backend: str, fp16: bool, profile: dict | None = None,
                  weights_key: str = "", int8: bool = False, encoder=None, decoder_path=None,
                  device=None) -> Path:
    """Path of an ONNX file (backend 'onnx') or TensorRT engine ('tensorrt', built for the CUDA
    ``device``, with the shape ``profile``) for ``module``, exporting / building it the first time;
    ``int8``: the INT8 ONNX graph (export/int8.py), quantized from the FP32 one (a decoder's calibrated
    on ``encoder``'s features). An FP16 export is first checked for overflow (export.fp16.check_fp16,
    ``decoder_path`` naming a decoder's file), as the export command does."""
    if int8 and (backend != "onnx" or fp16):
        raise ValueError("INT8 graphs are quantized from FP32 ONNX graphs, for ONNX Runtime")
    if backend == "tensorrt" and profile is None:
        raise ValueError("a TensorRT engine needs a shape profile")
    from export.onnx_export import export_onnx
    prec = "fp16" if fp16 else "fp32"
    prof = "dyn" if profile is None else "_".join("x".join(map(str, profile[k][2:])) for k in ("min", "opt", "max"))
    key = hashlib.sha256(f"{weights_key}|{_versions(backend, device)}|{prof}".encode()).hexdigest()[:12]
    folder = cache_dir() / "engines"
    onnx_path = folder / f"{what}_{layer}_{prec}_dyn_{hashlib.sha256((weights_key + _versions('onnx')).encode()).hexdigest()[:12]}.onnx"
    if not onnx_path.exists():
        if fp16:
            from export.fp16 import check_fp16
            check_fp16(module, what, layer, decoder_path, encoder=encoder)
        log.info("exporting the %s (%s, %s) to ONNX, once: %s", what, layer, prec, onnx_path)
        export_onnx(module, onnx_path, what=what, layer=layer, fp16=fp16, dynamic=True)
    if backend == "onnx" and int8:
        import onnxruntime
        from export.int8 import RECIPE, default_reduce_range, quantize
        rr = default_reduce_range()
        tag = hashlib.sha256(f"{onnx_path.name}|ort{onnxruntime.__version__}|recipe{RECIPE}".encode()).hexdigest()[:12]
        q_path = folder / f"{what}_{layer}_int8{'_w7' if rr else ''}_dyn_{tag}.onnx"
        if not q_path.exists():
            log.info("quantizing the %s (%s) to INT8, once: %s", what, layer, q_path)
            quantize(onnx_path, q_path, encoder=encoder, reduce_range=rr)
        return q_path
    if backend == "onnx":
        return onnx_path
    engine_path = folder / f"{what}_{layer}_{prec}_{prof}_{key}.engine"
    if not engine_path.exists():
        from export.trt_build import build_engine
        log.info("building the TensorRT %s engine (%s, %s), once; later runs reuse %s", what, layer, prec,
                 engine_path)
        build_engine(onnx_path, engine_path, fp16=fp16, profile=profile, device=device)
    return engine_path
