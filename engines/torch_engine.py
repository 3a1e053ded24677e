"""PyTorch engine: CPU or CUDA, FP32 or FP16, optional channels_last, torch.compile and
CUDA-graph replay for a fixed shape (GPU)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .base import Engine, register


@register("torch", ".pt", ".pth")
class TorchEngine(Engine):
    kind = "torch"
    # CUDA graphs kept, one per input shape, least recently used dropped beyond this: each holds its
    # own input, output and activation memory, and a frame size stays the same for a whole stream.
    # A shape is captured the second time it comes (a capture costs three passes): style paintings,
    # encoded once each, and a folder of stills of assorted sizes run eagerly.
    MAX_GRAPHS = 4
    MAX_SEEN = 64

    def __init__(self, source="torch", *, device="cpu", precision: str = "fp32", module: nn.Module | None = None,
                 channels_last: bool = False, compile: bool = False, cuda_graph: bool = False, **kw):
        if module is None:
            if str(source) == "torch":
                raise ValueError("TorchEngine needs module= (an nn.Module) or a decoder file path")
            from .decoder import load_decoder
            module = load_decoder(Path(source), **kw)
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("FP16 TorchEngine needs a CUDA device")
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        m = module.eval().to(self.device, self.dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        self.module = m
        self.fn = torch.compile(m, mode="max-autotune-no-cudagraphs") if compile else m
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._seen: OrderedDict[tuple, None] = OrderedDict()      # shapes run once, eagerly
        self.in_channels = getattr(module, "in_channels", 3)
        self.meta = {"layer": getattr(module, "layer", None)}

    def _run(self, x):
        # out in FP32 and NCHW-contiguous, whatever the engine ran in: one copy does both (none
        # for FP32 NCHW), and the fused reconstruction op takes its fast path on NCHW features
        y = self.fn(x.to(self.device, self.dtype, memory_format=self.memory_format))
        return y.to(torch.float32, memory_format=torch.contiguous_format)

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        if not self.cuda_graph:
            return self._run(x)
        key = tuple(x.shape)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        elif key not in self._seen:                     # first time: eagerly, and remember the shape
            self._seen[key] = None
            while len(self._seen) > self.MAX_SEEN:
                self._seen.popitem(last=False)
            return self._run(x)
        else:                                           # second time: capture (buffers once per shape)
            del self._seen[key]
            while len(self._graphs) >= self.MAX_GRAPHS:
                self._graphs.popitem(last=False)
            static_in = torch.zeros(key, device=self.device)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    self._run(static_in)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_out = self._run(static_in)
            self._graphs[key] = (g, static_in, static_out)
        g, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        g.replay()
        return static_out.clone()
