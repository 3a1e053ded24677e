"""TensorRT engine (TensorRT 10 and 11): named I/O tensors, ``execute_async_v3`` on a CUDA stream of
the engine's own, ordered after and before torch's current one, torch tensors as buffers (no pycuda:
one allocator, no second context).

Engine files carry a JSON header before the serialized engine:
``MAGIC | uint32 little-endian header length | header JSON | engine bytes``.
The header records the network, layer, input convention, precision, shape profile and
the TensorRT / torch versions and GPU that built it; ``export.trt_build`` writes it.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from .base import Engine, register

MAGIC = b"STYLECAM-TRT1\n"

_LOGGER = None


def tensorrt_or_error(instead: str = "use --backend onnx or --backend torch"):
    """The tensorrt module, or a RuntimeError saying what is missing and, ``instead``, what to do (the
    caller's own options: ``stylecam export`` has --format, not --backend)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT is not installed (pip install -e '.[tensorrt]' on a machine with an "
                           f"NVIDIA GPU); {instead}") from e
    except OSError as e:       # installed, but its libraries (libnvinfer) do not load
        raise RuntimeError(f"TensorRT is installed but does not load ({e}); {instead}") from e
    if not torch.cuda.is_available():
        raise RuntimeError(f"TensorRT needs an NVIDIA GPU visible to PyTorch; {instead}")
    return trt


def trt_logger(trt):
    """The one TensorRT logger of this process: TensorRT keeps a single logger pointer for all its
    builders and runtimes, and warns (and may hold a dead pointer) when each brings its own."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def torch_dtype(trt, dt, what: str) -> torch.dtype:
    """The torch dtype of an engine's I/O tensor; anything but FP32, FP16 or BF16 is refused (its bytes
    would be misread)."""
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dt not in table:
        raise ValueError(f"this engine's {what} is {dt}: stylecam feeds FP32, FP16 or BF16 tensors only")
    return table[dt]


def read_engine_file(path: Path) -> tuple[dict, bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a stylecam TensorRT engine (no stylecam header): build one with "
                         "`stylecam export --format engine`")
    n = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])[0]
    start = len(MAGIC) + 4
    header = json.loads(data[start:start + n].decode())
    return header, data[start + n:]


def write_engine_file(path: Path, header: dict, blob: bytes) -> None:
    from realtime.images import atomic_path
    h = json.dumps(header).encode()
    with atomic_path(path) as tmp:          # renamed with the umask's permissions, not mkstemp's 0600
        tmp.write_bytes(MAGIC + struct.pack("<I", len(h)) + h + bytes(blob))


def cuda_device(device) -> torch.device:
    """``device`` as a CUDA device with an index; a CPU device is refused (an engine runs on a GPU, and its
    outputs would not be on the device the caller works on)."""
    d = torch.device(device)
    if d.type != "cuda":
        raise ValueError(f"a TensorRT engine runs on a CUDA device, not {d}: use --backend onnx or torch on "
                         "the CPU")
    return torch.device("cuda", torch.cuda.current_device() if d.index is None else d.index)


@register("tensorrt", ".engine")
class TrtEngine(Engine):
    kind = "tensorrt"

    def __init__(self, source, *, device="cuda", precision: str = "fp16", **kw):
        trt = tensorrt_or_error()
        self.device = cuda_device(device)
        self.header, blob = read_engine_file(Path(source))
        self.meta = self.header
        self.precision = self.header.get("precision", precision)
        self.runtime = trt.Runtime(trt_logger(trt))
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                raise RuntimeError(f"TensorRT {trt.__version__} could not load {source} on "
                                   f"{torch.cuda.get_device_name(self.device)}: it was built by TensorRT "
                                   f"{self.header.get('tensorrt', '?')} on {self.header.get('gpu', '?')} "
                                   "(an engine runs only with the TensorRT version, and on the GPU model, "
                                   "that built it); rebuild it here with `stylecam export --format engine`")
            self.context = self.engine.create_execution_context()
            # TensorRT on the legacy default stream (torch's, unless the caller chose another) adds
            # synchronisations of its own ("Using default stream in enqueueV3() may lead to performance
            # issues"): it runs on this stream, ordered against the caller's by events
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.in_channels = int(self.header.get("in_channels", 0))
        prof = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_shape, self.max_shape = tuple(prof[0]), tuple(prof[2])
        self.in_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name), "input")
        self.out_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name), "output")

    def check(self, x):
        super().check(x)
        if any(s < lo or s > hi for s, lo, hi in zip(x.shape, self.min_shape, self.max_shape)):
            lo, hi = self.min_shape[2:], self.max_shape[2:]
            raise ValueError(f"input {tuple(x.shape)} is outside this engine's profile: it takes "
                             f"{lo[0]}x{lo[1]} to {hi[0]}x{hi[1]} (HxW); build one for other sizes with "
                             "`stylecam export --format engine --min HxW --max HxW`, or use --backend torch")

    @torch.no_grad()
    def __call__(self, x):
        self.check(x)
        x = x.to(self.device, self.in_dtype).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise RuntimeError(f"TensorRT refused the input shape {tuple(x.shape)}")
        # a fresh output each call (torch's caching allocator makes that cheap, in stream order): a buffer
        # kept per shape grew without bound over a folder of stills of many sizes, and the one returned
        # was overwritten by the next call while a caller (a painting's features) still held it
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device=self.device,
                          dtype=self.out_dtype)
        if not (self.context.set_tensor_address(self.input_name, x.data_ptr())
                and self.context.set_tensor_address(self.output_name, out.data_ptr())):
            raise RuntimeError("TensorRT refused a tensor address")
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)              # the input's writes (on the caller's stream) first
        with torch.cuda.device(self.device):
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        caller.wait_stream(self.stream)              # the caller's next work after the engine's
        x.record_stream(self.stream)                 # neither buffer is reused before the engine is done
        out.record_stream(self.stream)
        return out.float()
