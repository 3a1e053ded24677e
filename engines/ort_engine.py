"""ONNX Runtime engine: the CPU execution provider always; CUDA / TensorRT providers when
installed and the device is CUDA, with IO binding so outputs land in torch tensors."""
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
        avail = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
            if not gpu:
                raise RuntimeError("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu), "
                                   "or use --device cpu")
            providers = gpu + providers
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
        x = x.detach().float().contiguous()
        b = self._binding
        b.bind_input(self.input_name, "cuda", self.device.index or 0, np.float32, list(x.shape), x.data_ptr())
        b.bind_output(self.output_name, "cuda", self.device.index or 0)
        self.session.run_with_iobinding(b)
        out = b.get_outputs()[0]
        y = torch.from_dlpack(out.to_dlpack()) if hasattr(out, "to_dlpack") else \
            torch.from_numpy(out.numpy()).to(self.device)
        return y.float()
