"""Build a TensorRT engine from an exported ONNX file (TensorRT 10 or 11).

TensorRT 10: ``build_serialized_network`` with ``BuilderFlag.FP16`` for FP16.
TensorRT 11 removed that flag in favour of strongly typed networks: an FP16 engine comes
from the FP16 ONNX graph (``export_onnx(fp16=True)``, FP32 in/out, FP16 inside), parsed
into a ``STRONGLY_TYPED`` network.  Both paths take a dynamic shape profile (min/opt/max).
TF32 is turned off: the layers the graph keeps in FP32 (the statistics) stay FP32, and an
FP32 engine matches PyTorch's FP32 within the export's parity tolerance.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from engines.trt_engine import tensorrt_or_error, trt_logger, write_engine_file

log = logging.getLogger(__name__)


def build_engine(onnx_path: str | Path, out_path: str | Path, *, fp16: bool, profile: dict,
                 workspace_gb: float = 4.0, device=None) -> Path:
    """``profile``: {'min': (N,C,H,W), 'opt': ..., 'max': ...} for the network's input; ``device``: the
    CUDA device to build for (default: the current one)."""
    import onnx
    trt = tensorrt_or_error()
    if not profile or any(k not in profile for k in ("min", "opt", "max")):
        raise ValueError("a TensorRT engine needs a shape profile: {'min': ..., 'opt': ..., 'max': ...}")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False)
                       .metadata_props}.get("stylecam", "{}"))
    major = int(trt.__version__.split(".")[0])
    strongly_typed = major >= 11 or not hasattr(trt.BuilderFlag, "FP16")
    graph_precision = meta.get("precision", "fp32")
    if strongly_typed and fp16 and graph_precision != "fp16":       # before the minutes of parsing
        raise ValueError(f"TensorRT {trt.__version__} builds FP16 engines from FP16 ONNX graphs only: "
                         f"export with --fp16 first")
    # a strongly typed network takes its precision from the graph's types, whatever was asked
    precision = graph_precision if strongly_typed else ("fp16" if fp16 else "fp32")
    dev = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    logger = trt_logger(trt)
    with torch.cuda.device(dev):
        builder = trt.Builder(logger)
        flags = 0
        if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if fp16 and not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        if hasattr(trt.BuilderFlag, "TF32"):       # on by default: FP32 layers would round to 10-bit mantissas
            config.clear_flag(trt.BuilderFlag.TF32)
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
    header.update({"precision": precision, "profile": {k: list(v) for k, v in profile.items()},
                   "tensorrt": trt.__version__, "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name(dev), "strongly_typed": strongly_typed,
                   "build_seconds": round(time.perf_counter() - t, 1)})
    write_engine_file(out_path, header, bytes(blob))
    log.info("built %s in %.0f s", out_path, time.perf_counter() - t)
    return out_path
