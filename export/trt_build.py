"""Build a TensorRT engine from an exported ONNX file (TensorRT 10 or 11).

TensorRT 10: ``build_serialized_network`` with ``BuilderFlag.FP16`` for FP16.
TensorRT 11 removed that flag in favour of strongly typed networks: an FP16 engine comes
from the FP16 ONNX graph (``export_onnx(fp16=True)``, FP32 in/out, FP16 inside), parsed
into a ``STRONGLY_TYPED`` network.  Both paths take a dynamic shape profile (min/opt/max).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from engines.trt_engine import tensorrt_or_error, write_engine_file

log = logging.getLogger(__name__)


def build_engine(onnx_path: str | Path, out_path: str | Path, *, fp16: bool, profile: dict,
                 workspace_gb: float = 4.0) -> Path:
    """``profile``: {'min': (N,C,H,W), 'opt': ..., 'max': ...} for the network's input."""
    import onnx
    trt = tensorrt_or_error()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False)
                       .metadata_props}.get("stylecam", "{}"))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    strongly_typed = major >= 11 or not hasattr(trt.BuilderFlag, "FP16")
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errs}")
    if strongly_typed and fp16 and meta.get("precision") != "fp16":
        raise ValueError(f"TensorRT {trt.__version__} builds FP16 engines from FP16 ONNX graphs only: "
                         f"export with --fp16 first")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    opt = builder.create_optimization_profile()
    opt.set_shape(inp.name, tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]))
    config.add_optimization_profile(opt)
    t = time.perf_counter()
    log.info("building a TensorRT engine for %s (this takes a while, once)...", onnx_path.name)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    header = dict(meta)
    header.update({"precision": "fp16" if fp16 else "fp32", "profile": {k: list(v) for k, v in profile.items()},
                   "tensorrt": trt.__version__, "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name(0), "strongly_typed": strongly_typed,
                   "build_seconds": round(time.perf_counter() - t, 1)})
    write_engine_file(out_path, header, bytes(blob))
    log.info("built %s in %.0f s", out_path, time.perf_counter() - t)
    return out_path
