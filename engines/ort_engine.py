"""ONNX Runtime engine: the CPU execution provider always; the CUDA provider (onnxruntime-gpu) when
the device is CUDA, with IO binding so inputs and outputs stay on the GPU as torch tensors.
(ONNX Runtime's own TensorRT provider is not used: stylecam has a TensorRT backend of its own, with a
cache of built engines, where that provider would build them again at every start.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .base import Engine, register


@register("onnx", ".onnx")
class OrtEngine(Engine):
    kind = "onnx"

    def __init__(self, source, *, device="cpu", precision: str = "fp32", threads: int = 0, **kw):
        import onnxruntime as ort
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        avail = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in avail:
                raise RuntimeError("this onnxruntime has no CUDA provider: replace it with onnxruntime-gpu (pip "
                                   "uninstall onnxruntime, then pip install onnxruntime-gpu: the two must not be "
                                   "installed together), or use --backend torch or --device cpu")
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index})] + providers
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        # Between two runs ORT's worker threads spin-wait by default, taking the cores from the
        # torch reconstruction and MediaPipe stages that run in between on the CPU.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.in_channels = inp.shape[1] if isinstance(inp.shape[1], int) else 0
        self.static_hw = tuple(inp.shape[2:]) if all(isinstance(s, int) for s in inp.shape[2:]) else None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(props.get("stylecam", "{}"))
        self.precision = self.meta.get("precision", precision)
        self._binding = self.session.io_binding() if self.device.type == "cuda" else None

    def check(self, x):
        super().check(x)
        if self.static_hw is not None and tuple(x.shape[2:]) != self.static_hw:
            raise ValueError(f"this ONNX model was exported for {self.static_hw[0]}x{self.static_hw[1]} "
                             f"inputs, got {x.shape[2]}x{x.shape[3]} (export with --dynamic)")

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        if self._binding is None:
            y = self.session.run([self.output_name], {self.input_name: x.detach().float().cpu().numpy()})[0]
            return torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
        x = x.detach().to(self.device, torch.float32).contiguous()
        b = self._binding
        b.bind_input(self.input_name, "cuda", self.device.index, np.float32, list(x.shape), x.data_ptr())
        b.bind_output(self.output_name, "cuda", self.device.index)
        # ONNX Runtime runs on a stream of its own: the input's writes on torch's must be done first
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(b)
        return ortvalue_to_torch(b.get_outputs()[0], self.device).float()


def ortvalue_to_torch(value, device) -> torch.Tensor:
    """An ONNX Runtime OrtValue as a torch tensor on ``device``, without a copy where the value already is
    there: DLPack (``__dlpack__`` in onnxruntime 1.2x+, ``to_dlpack`` before); a copy through NumPy
    only for an onnxruntime with neither (it went through NumPy always while only ``to_dlpack`` was
    looked for: a GPU -> host -> GPU copy of every output)."""
    if hasattr(value, "__dlpack__"):
        return torch.from_dlpack(value).to(device)
    if hasattr(value, "to_dlpack"):
        return torch.from_dlpack(value.to_dlpack()).to(device)
    return torch.from_numpy(np.ascontiguousarray(value.numpy())).to(device)
