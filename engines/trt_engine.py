"""TensorRT engine (TensorRT 10 and 11): named I/O tensors, ``execute_async_v3`` on torch's
current CUDA stream, torch tensors as buffers (no pycuda: one allocator, one stream).

Engine files carry a JSON header before the serialized engine:
``MAGIC | uint32 little-endian header length | header JSON | engine bytes``.
The header records the network, layer, input convention, precision, shape profile and
the TensorRT / torch versions; ``export.trt_build`` writes it.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from .base import Engine, register

MAGIC = b"STYLECAM-TRT1\n"


def tensorrt_or_error(instead: str = "use --backend onnx or --backend torch"):
    """The tensorrt module, or a RuntimeError saying what is missing and, ``instead``, what to do (the
    caller's own options: ``stylecam export`` has --format, not --backend)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT is not installed (pip install -e '.[tensorrt]' on a machine with an "
                           f"NVIDIA GPU); {instead}") from e
    if not torch.cuda.is_available():
        raise RuntimeError(f"TensorRT needs an NVIDIA GPU visible to PyTorch; {instead}")
    return trt


def read_engine_file(path: Path) -> tuple[dict, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a stylecam TensorRT engine (no header)")
    n = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])[0]
    start = len(MAGIC) + 4
    header = json.loads(data[start:start + n].decode())
    return header, data[start + n:]


def write_engine_file(path: Path, header: dict, blob: bytes) -> None:
    from realtime.images import atomic_path
    h = json.dumps(header).encode()
    with atomic_path(path) as tmp:          # renamed with the umask's permissions, not mkstemp's 0600
        tmp.write_bytes(MAGIC + struct.pack("<I", len(h)) + h + bytes(blob))


@register("tensorrt", ".engine", ".plan", ".trt")
class TrtEngine(Engine):
    kind = "tensorrt"

    def __init__(self, source, *, device="cuda", precision: str = "fp16", **kw):
        trt = tensorrt_or_error()
        self.device = torch.device(device if str(device) != "cpu" else "cuda")
        self.header, blob = read_engine_file(Path(source))
        self.meta = self.header
        self.precision = self.header.get("precision", precision)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {source} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.in_channels = int(self.header.get("in_channels", 0))
        prof = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_shape, self.max_shape = tuple(prof[0]), tuple(prof[2])
        self.out_dtype = torch.float16 if self.engine.get_tensor_dtype(self.output_name) == trt.DataType.HALF \
            else torch.float32
        self.in_dtype = torch.float16 if self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF \
            else torch.float32
        self._out: dict[tuple, torch.Tensor] = {}      # output buffers, allocated once per input shape

    def check(self, x):
        super().check(x)
        if any(s < lo or s > hi for s, lo, hi in zip(x.shape, self.min_shape, self.max_shape)):
            raise ValueError(f"input {tuple(x.shape)} is outside this engine's profile "
                             f"{self.min_shape}..{self.max_shape}; rebuild with a wider --min/--max")

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        x = x.to(self.device, self.in_dtype).contiguous()
        key = tuple(x.shape)
        self.context.set_input_shape(self.input_name, key)
        if key not in self._out:
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            self._out[key] = torch.empty(shape, device=self.device, dtype=self.out_dtype)
        out = self._out[key]
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out.float()
