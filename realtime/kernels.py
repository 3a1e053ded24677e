"""The fused masked-reconstruction op: ``torch.library`` ops with a PyTorch reference for the CPU
and a CUDA C++ implementation built on first use (following pytorch/extension-cpp).

    stylecam::masked_moments(feat, masks) -> (s1, s2, wsum)    pass 1: per-(region, channel) sums, FP32
    stylecam::masked_affine(feat, masks, A, B) -> out          pass 2: out = f * sum_k W_k A_k + sum_k W_k B_k

Between the two passes, ``fused_reconstruct`` solves the K x C problem in PyTorch (for the
paper's iterative ``linear`` form, the exact scalar recurrence of its N iterations, so 500
iterations cost no more than one).  The CUDA code is compiled just in time with
``torch.utils.cpp_extension.load`` into ``~/.cache/stylecam/torch_extensions`` for the
architecture of the running GPU, and runs on PyTorch's current stream with PyTorch's
allocator.  It replaces pycuda, which the first design named: one allocator, one stream, no
second CUDA context.  No binary is committed.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "masked_recon.cu"
_lib = torch.library.Library("stylecam", "DEF")
_lib.define("masked_moments(Tensor feat, Tensor masks) -> (Tensor, Tensor, Tensor)")
_lib.define("masked_affine(Tensor feat, Tensor masks, Tensor A, Tensor B) -> Tensor")


def moments_reference(feat: torch.Tensor, masks: torch.Tensor):
    """s1[k,c] = sum_p W f, s2[k,c] = sum_p W f^2, wsum[k] = sum_p W, in float32."""
    f = feat[0].reshape(feat.shape[1], -1).float()
    w = masks.reshape(masks.shape[0], -1).float()
    return w @ f.T, w @ (f * f).T, w.sum(1)


def affine_reference(feat: torch.Tensor, masks: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    f = feat.float()
    ga = torch.einsum("kc,khw->chw", A.float(), masks.float())[None]
    gb = torch.einsum("kc,khw->chw", B.float(), masks.float())[None]
    out = f * ga + gb
    if feat.dtype == torch.float16:
        out = out.clamp(-65504, 65504)
    return out.to(feat.dtype).contiguous(memory_format=torch.channels_last
                                         if feat.is_contiguous(memory_format=torch.channels_last)
                                         and not feat.is_contiguous() else torch.contiguous_format)


_lib.impl("masked_moments", moments_reference, "CPU")
_lib.impl("masked_affine", affine_reference, "CPU")


@torch.library.register_fake("stylecam::masked_moments")
def _moments_fake(feat, masks):
    K, C = masks.shape[0], feat.shape[1]
    return (feat.new_empty((K, C), dtype=torch.float32), feat.new_empty((K, C), dtype=torch.float32),
            feat.new_empty((K,), dtype=torch.float32))


@torch.library.register_fake("stylecam::masked_affine")
def _affine_fake(feat, masks, A, B):
    return torch.empty_like(feat)


_ext = None
_ext_error: str | None = None


def cuda_home() -> str | None:
    """The CUDA toolkit's own folder (the one with lib64/libcudart).  torch's guess, the folder
    holding an ``nvcc`` wrapper or link such as /usr/local, has no lib64/libcudart and linking
    then fails, so look for the toolkit itself."""
    def ok(d) -> bool:
        d = Path(d)
        return (d / "bin" / "nvcc").exists() and any((d / sub).glob("libcudart.so*") for sub in ("lib64", "lib"))
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(nvcc).resolve().parent.parent))
    cands += sorted((str(p) for p in Path("/usr/local").glob("cuda-*")), reverse=True)
    for c in cands:
        if c and ok(c):
            return str(Path(c).resolve())
    return None


def arch_list() -> str:
    """The running GPU's architecture; without a GPU (compile-only), a common set."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}.{minor}"
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0")


def build_extension(verbose: bool = False):
    """Compile (or load the cached build of) the CUDA implementation; returns the module."""
    global _ext, _ext_error
    if _ext is not None:
        return _ext
    home = cuda_home()
    if home is None:
        raise RuntimeError("no CUDA toolkit (nvcc) found: the fused kernel cannot be built; the PyTorch "
                           "reference path is used instead")
    if torch.version.cuda is None:
        raise RuntimeError("this PyTorch is a CPU build: the CUDA kernel cannot be used")
    os.environ["CUDA_HOME"] = home
    from torch.utils import cpp_extension
    cpp_extension.CUDA_HOME = home
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
    from engines.weights import cache_dir
    build_dir = cache_dir() / "torch_extensions" / f"masked_recon_cu{torch.version.cuda}_sm{arch_list().replace(';', '_').replace('.', '')}"
    build_dir.mkdir(parents=True, exist_ok=True)
    log.info("building the fused CUDA kernel (first use only, about two minutes) in %s", build_dir)
    try:
        _ext = cpp_extension.load(name="stylecam_masked_recon", sources=[str(SOURCE)], build_directory=str(build_dir),
                                  extra_cuda_cflags=["-O3", "-lineinfo"], verbose=verbose)
    except Exception as e:
        _ext_error = f"{type(e).__name__}: {e}"
        raise
    return _ext


def available() -> bool:
    """True once the CUDA implementation is built and a GPU is present."""
    if not torch.cuda.is_available() or _ext_error is not None:
        return False
    try:
        build_extension()
        return True
    except Exception as e:  # noqa: BLE001 - fall back to the reference, loudly
        log.warning("fused CUDA kernel unavailable (%s); using the PyTorch path", e)
        return False


def solve(mode: str, s1, s2, wsum, style_mean, style_std, alpha: float, iterations: int | None = None,
          state=None):
    """K x C coefficients (A, B) of pass 2 from pass 1's sums, with temporal smoothing and warm start."""
    from .reconstruct import linear_iterative_shift, stats_from_sums
    cs = stats_from_sums(s1, s2, wsum)
    if state is not None:
        cs = state.smooth(cs)
    if mode == "linear":
        A = torch.ones_like(cs.mean)
        if iterations is None:
            B = alpha * (style_mean - cs.mean)
        else:
            off0 = state.linear_offset if state is not None and state.linear_offset is not None \
                and state.linear_offset.shape == cs.mean.shape else None
            B, off = linear_iterative_shift(cs.mean, style_mean, alpha, iterations, off0)
            if state is not None:
                state.linear_offset = off
        return A, B
    if mode == "adain":
        a = style_std / cs.std
        return (1 - alpha) + alpha * a, alpha * (style_mean - a * cs.mean)
    raise ValueError(f"the fused op covers linear and adain, not {mode!r}")


def fused_reconstruct(feat, masks, style, mode: str, alpha: float, iterations=None, state=None):
    """linear / adain through the two ops (CUDA kernel on a GPU, reference on the CPU)."""
    s1, s2, ws = torch.ops.stylecam.masked_moments(feat, masks)
    A, B = solve(mode, s1, s2, ws, style.stats.mean.to(s1.device), style.stats.std.to(s1.device), alpha,
                 iterations, state)
    return torch.ops.stylecam.masked_affine(feat, masks, A, B)
