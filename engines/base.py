"""One protocol for everything that runs a network: PyTorch, ONNX Runtime, TensorRT.

An Engine maps an N x C x H x W float32 torch tensor to another, on its device.
Engines are chosen by a keyed registry (file suffix or backend name -> class),
not an if/elif chain (the shape of ultralytics' backends: one small class per
runtime, a ``warmup()``, ValueError for a shape the engine cannot take).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

REGISTRY: dict[str, type["Engine"]] = {}


def register(*keys: str) -> Callable[[type], type]:
    def deco(cls):
        for k in keys:
            REGISTRY[k] = cls
        return cls
    return deco


class Engine:
    """``engine(x)``: N x C_in x H x W float32 tensor -> N x C_out x H' x W' float32 tensor on ``device``.

    Contract: inputs are the project's convention (images: BGR in [0, 1]; features: raw
    encoder activations); FP16, if any, stays inside the engine.
    """
    kind = "base"
    in_channels: int = 0
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    meta: dict

    def check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.kind} engine expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or (self.in_channels and x.shape[1] != self.in_channels):
            raise ValueError(f"{self.kind} engine expects N x {self.in_channels} x H x W, got {tuple(x.shape)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def warmup(self, shape: tuple[int, int, int, int], n: int = 2) -> None:
        x = torch.zeros(shape, device=self.device)
        for _ in range(n):
            self(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def load_engine(path_or_name, device="cpu", precision: str = "fp32", **kw) -> Engine:
    """Dispatch on a backend name (``torch``, ``onnx``, ``tensorrt``) or a file suffix
    (``.pt``, ``.onnx``, ``.engine``).  For ``torch`` give ``module=`` (an nn.Module)."""
    key = str(path_or_name)
    if key not in REGISTRY:
        key = Path(key).suffix.lower()
    # importing the backends fills the registry
    from . import ort_engine, torch_engine, trt_engine  # noqa: F401
    cls = REGISTRY.get(key) or REGISTRY.get(str(path_or_name))
    if cls is None:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"no engine for {path_or_name!r}; known backends and suffixes: {known}")
    return cls(path_or_name, device=device, precision=precision, **kw)
