"""The fused masked-reconstruction op: ``torch.library`` ops with a PyTorch reference for the CPU
and a CUDA C++ implementation built on first use (following pytorch/extension-cpp).

    stylecam::masked_moments(feat, masks) -> (s1, s2, wsum)    pass 1: per-(region, channel) sums, FP32
    stylecam::masked_affine(feat, masks, A, B) -> out          pass 2: out = f * sum_k W_k A_k + sum_k W_k B_k

    stylecam::fused_recon(feat, masks, style_mean, style_std, alpha, mode, iterations, momentum,
                          prev_mean?, prev_var?, offset0?, floor?) -> (out, wsum, mean, var, offset)
        the whole frame: pass 1, the K x C solve (statistics, their smoothing with the previous
        frame's, the coefficients; for the paper's iterative ``linear`` form the exact scalar
        recurrence of its N iterations, so 500 iterations cost no more than one), pass 2, whose
        results below ``floor`` are raised to it (the stylizer's clamp at zero, without a pass of
        its own).  On a GPU that is three launches (memset, pass 1, pass 2 with the solve in its prologue;
        four with STYLECAM_MOMENTS=...+solve1) from one call.

``fused_reconstruct`` carries a ``ReconState`` (the warm start) in and out of ``fused_recon``.
Each op's CPU implementation is its slow, obviously correct reference (``*_reference`` below),
which the CUDA code is tested against.  The CUDA code is compiled just in time with
``torch.utils.cpp_extension.load`` into ``~/.cache/stylecam/torch_extensions`` for the
architectures of the visible GPUs (the live command builds it before its first frame), and runs on PyTorch's current stream with PyTorch's
allocator.  It replaces pycuda, which the first design named: one allocator, one stream, no
second CUDA context.  No binary is committed.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "masked_recon.cu"          # the ops (PyTorch glue)
# the kernels, one translation unit per dtype so that ninja compiles them in parallel
SOURCES = [SOURCE] + [SOURCE.with_name(f"masked_recon_{t}.cu") for t in ("f32", "f16", "bf16")]
_lib = torch.library.Library("stylecam", "DEF")
_lib.define("masked_moments(Tensor feat, Tensor masks) -> (Tensor, Tensor, Tensor)")
_lib.define("masked_affine(Tensor feat, Tensor masks, Tensor A, Tensor B) -> Tensor")
_lib.define("fused_recon(Tensor feat, Tensor masks, Tensor style_mean, Tensor style_std, float alpha, int mode, "
            "int iterations, float momentum, Tensor? prev_mean, Tensor? prev_var, Tensor? offset0, float? floor=None) "
            "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")

MODE_CODES = {"linear": 0, "linear_iterative": 1, "adain": 2}


def moments_reference(feat: torch.Tensor, masks: torch.Tensor):
    """s1[k,c] = sum_p W f, s2[k,c] = sum_p W f^2, wsum[k] = sum_p W, in float32."""
    f = feat[0].reshape(feat.shape[1], -1).float()
    w = masks.reshape(masks.shape[0], -1).float()
    return w @ f.T, w @ (f * f).T, w.sum(1)


def affine_reference(feat: torch.Tensor, masks: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     floor: float | None = None) -> torch.Tensor:
    """out = f * sum_k W_k A_k + sum_k W_k B_k, raised to ``floor`` where below it."""
    f = feat.float()
    ga = torch.einsum("kc,khw->chw", A.float(), masks.float())[None]
    gb = torch.einsum("kc,khw->chw", B.float(), masks.float())[None]
    out = f * ga + gb
    if floor is not None:
        out = out.clamp_min(floor)
    if feat.dtype == torch.float16:
        out = out.clamp(-65504, 65504)
    return out.to(feat.dtype).contiguous(memory_format=torch.channels_last
                                         if feat.is_contiguous(memory_format=torch.channels_last)
                                         and not feat.is_contiguous() else torch.contiguous_format)


def solve_reference(s1, s2, wsum, style_mean, style_std, alpha: float, mode: int, iterations: int, momentum: float,
                    prev_mean=None, prev_var=None, offset0=None):
    """Between the passes, K x C numbers: region statistics from the sums, their smoothing with the
    previous frame's (``momentum``), and the coefficients A, B of pass 2 for ``mode`` (0 linear exact,
    1 linear with ``iterations`` steps of the paper's iteration, 2 adain).
    Returns (mean, var, offset, A, B); offset is mu^N - mu_c of the iterative form (else zeros)."""
    from .reconstruct import RegionStats, linear_iterative_shift, stats_from_sums
    cs = stats_from_sums(s1, s2, wsum)
    if prev_mean is not None:
        m = momentum
        cs = RegionStats(wsum, m * prev_mean.float() + (1 - m) * cs.mean, m * prev_var.float() + (1 - m) * cs.var)
    mean, var = cs.mean, cs.var
    sm, sd = style_mean.float().to(mean.device), style_std.float().to(mean.device)
    off = torch.zeros_like(mean)
    if mode == 0:
        A, B = torch.ones_like(mean), alpha * (sm - mean)
    elif mode == 1:
        B, off = linear_iterative_shift(mean, sm, alpha, iterations,
                                        offset0.float() if offset0 is not None else None)
        A = torch.ones_like(mean)
    elif mode == 2:
        a = sd / cs.std
        A, B = (1 - alpha) + alpha * a, alpha * (sm - a * mean)
    else:
        raise ValueError(f"fused_recon: mode must be 0, 1 or 2, got {mode}")
    return mean, var, off, A, B


def fused_recon_reference(feat, masks, style_mean, style_std, alpha: float, mode: int, iterations: int,
                          momentum: float, prev_mean=None, prev_var=None, offset0=None, floor=None):
    """The slow, obviously correct form of the CUDA op: pass 1, the solve, pass 2, one after another."""
    s1, s2, ws = moments_reference(feat, masks)
    mean, var, off, A, B = solve_reference(s1, s2, ws, style_mean, style_std, alpha, mode, iterations, momentum,
                                           prev_mean, prev_var, offset0)
    return affine_reference(feat, masks, A, B, floor), ws, mean, var, off


_lib.impl("masked_moments", moments_reference, "CPU")
_lib.impl("masked_affine", affine_reference, "CPU")
_lib.impl("fused_recon", fused_recon_reference, "CPU")


@torch.library.register_fake("stylecam::masked_moments")
def _moments_fake(feat, masks):
    K, C = masks.shape[0], feat.shape[1]
    return (feat.new_empty((K, C), dtype=torch.float32), feat.new_empty((K, C), dtype=torch.float32),
            feat.new_empty((K,), dtype=torch.float32))


@torch.library.register_fake("stylecam::masked_affine")
def _affine_fake(feat, masks, A, B):
    return torch.empty_like(feat)


@torch.library.register_fake("stylecam::fused_recon")
def _fused_fake(feat, masks, style_mean, style_std, alpha, mode, iterations, momentum, prev_mean, prev_var, offset0,
                floor=None):
    K, C = masks.shape[0], feat.shape[1]
    kc = lambda: feat.new_empty((K, C), dtype=torch.float32)  # noqa: E731
    return torch.empty_like(feat), feat.new_empty((K,), dtype=torch.float32), kc(), kc(), kc()


_ext = None
_ext_error: str | None = None


def cuda_home() -> str | None:
    """The CUDA toolkit's own folder (the one with lib64/libcudart).  torch's guess, the folder
    holding an ``nvcc`` wrapper or link such as /usr/local, has no lib64/libcudart and linking
    then fails, so look for the toolkit itself."""
    def ok(d) -> bool:
        d = Path(d)
        if os.name == "nt":          # the toolkit's Windows layout: bin/nvcc.exe, lib/x64/cudart.lib
            return (d / "bin" / "nvcc.exe").exists() and (d / "lib" / "x64" / "cudart.lib").exists()
        return (d / "bin" / "nvcc").exists() and any((d / sub).glob("libcudart.so*") for sub in ("lib64", "lib"))
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(nvcc).resolve().parent.parent))
    # versioned installs, newest first by number (cuda-12.10 after cuda-12.9, which a text sort inverts)
    cands += sorted((str(p) for p in Path("/usr/local").glob("cuda-*")), key=_version_key, reverse=True)
    found = [str(Path(c).resolve()) for c in cands if c and ok(c)]
    # torch refuses a toolkit of another major version than its own build's: prefer a matching one
    want = (torch.version.cuda or "").split(".")[0]
    return next((f for f in found if toolkit_version(f).split(".")[0] == want), found[0] if found else None)


def _version_key(path: str) -> tuple:
    return tuple(int(v) if v.isdigit() else -1 for v in Path(path).name.removeprefix("cuda-").split("."))


def toolkit_version(home: str) -> str:
    """A CUDA toolkit's version (``12.4.1``) from its version.json (CUDA 11.1 on) or version.txt, or the
    folder's name (cuda-12.4); "" when none says."""
    import json
    p = Path(home)
    try:
        return json.loads((p / "version.json").read_text())["cuda"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return (p / "version.txt").read_text().split()[-1]
    except (OSError, IndexError):
        pass
    return p.name.removeprefix("cuda-") if p.name.startswith("cuda-") else ""


def arch_list() -> str:
    """The architectures to build for: every visible GPU's (a process may use any of them; one build
    for the first device alone failed on another's with "no kernel image"). Not TORCH_CUDA_ARCH_LIST
    where a GPU is present: container images set it to ten architectures or more, each a minute of
    nvcc. Without a GPU (compile-only): TORCH_CUDA_ARCH_LIST, else a common set."""
    if torch.cuda.is_available():
        gpus = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join("%d.%d" % c for c in sorted(gpus))
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
    archs = arch_list()
    from engines.weights import cache_dir
    # the folder names the sources' hash too: torch's own rebuild check does not look at the header
    import hashlib
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(SOURCE.parent.glob("*.cu*")))).hexdigest()[:10]
    build_dir = (cache_dir() / "torch_extensions" /
                 f"masked_recon_cu{torch.version.cuda}_sm{archs.replace(';', '_').replace('.', '')}_{digest}")
    build_dir.mkdir(parents=True, exist_ok=True)
    log.info("building the fused CUDA kernel (first use only, about two minutes) in %s", build_dir)
    user_archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs        # cpp_extension reads it; the user's is put back after
    try:
        _ext = cpp_extension.load(name="stylecam_masked_recon", sources=[str(p) for p in SOURCES],
                                  build_directory=str(build_dir), extra_include_paths=[str(SOURCE.parent)],
                                  extra_cuda_cflags=["-O3", "-lineinfo"], verbose=verbose)
    except Exception as e:
        _ext_error = f"{type(e).__name__}: {e}"
        raise
    finally:
        if user_archs is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = user_archs
    layout = os.environ.get("STYLECAM_MOMENTS", "") or "auto"
    try:
        parse_variant(layout)
    except ValueError as e:
        log.warning("STYLECAM_MOMENTS: %s: using auto", e)
        layout = "auto"
    set_tuning(layout)
    return _ext


# Pass 1's layouts on the vector path (masked_recon.cu, tuning_pass1; masked_recon_kernels.cuh, Pass1),
# as the fields set_tuning hands the extension: warp = a warp per channel (the first layout), lanes1 =
# a thread per channel over the largest tile, prefetch2 = lanes1 with half the tile and its feature
# loads issued before the mask stage, quad = the largest tile read by 4 consecutive lanes per channel
# (each load of a warp reads whole 32-byte sectors).  Timed on the lent H100 (benchmarks/kernel.py,
# docs/results/kernel_gpu_h100.json); session 9 removed the layouts that never won (a quarter or half
# of the tile without prefetch, 8 lanes per channel).
# quadpf = quad with each thread's first four feature loads issued before the mask stage and four kept
# in flight (written after session 9's run for pass 1's low occupancy; timed on the H100 in sessions 11
# and 12: a tie at 720p and 1080p, 3 points lost at 480p -- opt-in).
MOMENTS_LAYOUTS = {
    "warp": {"lanes": False, "prefetch": False, "lpc": 1, "tile_div": 1},
    "lanes1": {"lanes": True, "prefetch": False, "lpc": 1, "tile_div": 1},
    "prefetch2": {"lanes": True, "prefetch": True, "lpc": 1, "tile_div": 2},
    "quad": {"lanes": True, "prefetch": False, "lpc": 4, "tile_div": 1},
    "quadpf": {"lanes": True, "prefetch": True, "lpc": 4, "tile_div": 1},
}
# "auto", the op's own choice and the default: quad with +even.  Session 9 on the H100 (CUDA graphs,
# adain/linear, % of copy bandwidth at 480p / 720p / 1080p): quad+even 76/76, 78/78, 80/80; the
# default before (lanes1, prefetch2 past one wave of blocks) 75/75, 75/76, 80/81; quad 72/73, 79/78,
# 77/77; the old default with +even 78/78, 76/75, 79/78 -- quad+even is within two points of the best
# at every size, where each of the others loses three or more somewhere.  Session 12 added +pdl
# (below) to the default: on the H100 (docs/results/kernel_gpu_h100_session12.json, same run) quad+even
# 71/71, 75/75, 77/77 against quad+even+pdl 72/73, 77/77, 78/78 -- better in all six rows.
DEFAULT_VARIANT = "quad+even+pdl"

# fused_recon runs its between-pass solve in pass 2's prologue (each block solving the entries of its
# own channels): one launch fewer than a solve kernel of its own, which was 2.1 of 43 us at 720p on the
# H100.  Session 8 timed both there (docs/results/kernel_gpu_h100.json, CUDA graphs): 480p 71-72 % of
# copy bandwidth against 67-68 %, 720p 71-72 % against 69 %, 1080p 77 % against 76 %.  A variant's
# suffix +solve1 keeps the separate solve kernel (the layout before, for comparison).  A suffix +even
# sizes the lanes layouts' blocks so that they fill whole waves evenly (masked_recon_kernels.cuh,
# even_span: e.g. 720p on the H100 as 528 blocks, four per multiprocessor, instead of 456, three or
# four).
# A suffix +pdl launches the op's passes as programmatic dependent launches on sm_90+ GPUs (Hopper's
# griddepcontrol; masked_recon_kernels.cuh, launch): pass 1 starts while the memset of its sums
# finishes, pass 2 loads its masks while pass 1 finishes.  Written in session 12 to close the gap
# to 80 % of copy bandwidth at 720p (74 % on the H100 in session 11, 42 us of which the two kernel
# boundaries cost a few); older GPUs launch the ordinary way.  Part of the default (above): a
# layout named without "auto" is taken exactly as named, so "quad+even" is the default less +pdl.
# A suffix +early (with +pdl) lets pass 2 launch before pass 1's loop instead of after it, into the
# slots pass 1 leaves free, and has pass 2 load its first channel's features before it waits; +fill
# (with +even) gives pass 1 at least as many blocks as fit on the GPU at once (720p on the H100: six
# per multiprocessor instead of four) for more loads in flight.  Both written in session 12 after the
# +pdl run, without a GPU.  Timed in session 20 on an H100 (docs/results/kernel_gpu_h100_session20.json):
# +early 0.3-1.8 points of copy bandwidth above auto in all six rows, +fill below it at 480p.
# A suffix +l2 (quad only) adds L2 eviction-priority hints (sm_80+): pass 1 reads the features with
# evict_last so that they are still in L2 when pass 2 reads them (a 720p FP16 frame's 29.5 MB against
# the H100's 50 MB of L2), pass 2 reads them and writes its output with evict_first
# (masked_recon_kernels.cuh, l2_policy); only in the fused op (fused_recon), whose pass 2 undoes pass
# 1's evict_last: the standalone masked_moments and masked_affine ops load as without it.  A suffix
# +p256 (quad only, not with +l2) has pass 1 load with L2's 256-byte prefetch, so that its next step's
# bytes are on their way from DRAM (ldg_256).  Both written in session 15 without a GPU; timed in
# session 20: +l2 0.4-1.4 and +p256 0.2-2.8 points above auto in all six rows.  None of the three is
# the default: one run's margins are within a machine's drift (auto: 77 % at 720p in session 12, 74 %
# in session 20); benchmarks/kernel.py --rounds is there to settle it on the next lent GPU.  Session
# 22 ran it on an H200 (3 interleaved rounds, docs/results/kernel_gpu_h200_session22.json): auto,
# +early and +p256 one within their ranges at 720p (62 % of that card's copy bandwidth, 36 us), +early
# 2 points up at 1080p and 1-2 down at 480p: still no variant better everywhere; auto stays.
# A suffix +rev (quad only, not with +l2; written in session 23 without a GPU, not yet timed) runs pass 2
# in pass 1's layout -- the same spans and 32-channel groups -- walking each span from its end, so that
# pass 2 first reads what pass 1 read last, the lines most likely still in L2 (masked_recon_kernels.cuh,
# affine_lanes_kernel; the idea is session 22's, docs/gpu_measurements.md).
SUFFIXES = ("even", "solve1", "pdl", "early", "fill", "l2", "p256", "rev")


class Variant(NamedTuple):
    """A kernel variant's fields, as set_tuning hands them to the extension."""
    layout: str        # pass 1's layout (MOMENTS_LAYOUTS)
    solve2: bool       # the between-pass solve in pass 2's prologue (no +solve1)
    even: bool         # +even: block spans filling whole waves evenly
    pdl: bool          # +pdl: programmatic dependent launches (sm_90+)
    early: bool        # +early: pass 2 launched before pass 1's loop
    fill: bool         # +fill: pass 1 in as many blocks as fit on the GPU at once
    l2: bool = False   # +l2: L2 eviction hints (quad only)
    p256: bool = False  # +p256: pass 1's loads with L2's 256-byte prefetch (quad only, not with +l2)
    rev: bool = False   # +rev: pass 2 in pass 1's layout, spans walked backwards (quad only, not with +l2)


def parse_variant(variant: str) -> Variant:
    """'LAYOUT[+even][+solve1][+pdl][+early][+fill][+l2|+p256][+rev]' -> its Variant (+rev not with
    +l2).  ``auto`` stands for DEFAULT_VARIANT (so ``auto+solve1`` is the default with the solve kernel;
    auto+even and auto+pdl repeat what auto has and are refused)."""
    layout, *flags = variant.split("+")
    if layout == "auto":
        default_layout, *default_flags = DEFAULT_VARIANT.split("+")
        layout, flags = default_layout, default_flags + flags
    bad = (layout not in MOMENTS_LAYOUTS or any(f not in SUFFIXES for f in flags) or len(set(flags)) != len(flags)
           or ("even" in flags and layout == "warp") or ("early" in flags and "pdl" not in flags)
           or ("fill" in flags and "even" not in flags) or (("l2" in flags or "p256" in flags) and layout != "quad")
           or ("l2" in flags and "p256" in flags) or ("rev" in flags and (layout != "quad" or "l2" in flags)))
    if bad:
        raise ValueError(f"unknown kernel variant {variant!r}: auto or a pass-1 layout ({', '.join(MOMENTS_LAYOUTS)}), "
                         f"optionally followed by +even (not with warp), +solve1, +pdl, +early (with +pdl) and "
                         f"+fill (with +even), +l2 or +p256 (with quad), +rev (with quad, not +l2); auto has +even+pdl")
    return Variant(layout, "solve1" not in flags, "even" in flags, "pdl" in flags, "early" in flags, "fill" in flags,
                   "l2" in flags, "p256" in flags, "rev" in flags)


def set_tuning(moments: str = "auto") -> None:
    """Launch choice of the CUDA op, for benchmarks and tests that compare them in one process:
    ``moments``, a variant: ``auto`` (DEFAULT_VARIANT) or pass 1's layout (MOMENTS_LAYOUTS),
    optionally with ``+even`` (the lanes layouts' blocks filling whole waves evenly), ``+solve1``
    (the between-pass solve as a kernel of its own), ``+pdl`` (programmatic dependent launches,
    sm_90+), ``+early`` (with +pdl: pass 2 launched before pass 1's loop), ``+fill`` (with +even:
    pass 1 in as many blocks as fit at once), ``+l2`` (with quad: L2 eviction hints) or ``+p256`` (with
    quad: pass 1's loads with L2's 256-byte prefetch), ``+rev`` (with quad, not +l2: pass 2 in pass 1's
    layout, walking its spans backwards).  Read from STYLECAM_MOMENTS when the extension is
    loaded.  The CPU reference has no such choice."""
    v = parse_variant(moments)
    if _ext is None:
        raise RuntimeError("the CUDA extension is not loaded (kernels.build_extension())")
    if not _ext.set_tuning(**MOMENTS_LAYOUTS[v.layout], even=v.even, solve_in_pass2=v.solve2, pdl=v.pdl,
                           early=v.early, fill=v.fill, l2=v.l2, p256=v.p256, rev=v.rev):
        raise RuntimeError(f"the CUDA extension refused the variant {moments!r}: rebuild it")


def available() -> bool:
    """True once the CUDA implementation is built and a GPU is present."""
    global _ext_error
    if not torch.cuda.is_available() or _ext_error is not None:
        return False
    try:
        build_extension()
        return True
    except Exception as e:  # noqa: BLE001 - fall back to the reference, loudly -- once
        _ext_error = _ext_error or f"{type(e).__name__}: {e}"     # every early failure too, not only a build's
        log.warning("fused CUDA kernel unavailable (%s); using the PyTorch path", e)
        return False


def check_fused_inputs(feat: torch.Tensor, masks: torch.Tensor, style_mean: torch.Tensor) -> None:
    """The op's checks, in Python, raising ValueError (the product's error for bad input) on every
    device before any work is queued; the CUDA op repeats them for direct callers (RuntimeError).
    (They were added when the CUDA op's error path crashed on torch 2.11: fixed, see the README.)"""
    if feat.dim() != 4 or feat.shape[0] != 1:
        raise ValueError(f"fused reconstruction: features must be 1 x C x H x W, got {tuple(feat.shape)}")
    if feat.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"fused reconstruction: features must be float32, float16 or bfloat16, got {feat.dtype}")
    if masks.dim() != 3 or tuple(masks.shape[1:]) != tuple(feat.shape[2:]):
        raise ValueError(f"fused reconstruction: masks must be K x H x W at the feature size {tuple(feat.shape[2:])}, "
                         f"got {tuple(masks.shape)}")
    if not 1 <= masks.shape[0] <= 8:
        raise ValueError(f"fused reconstruction: 1 to 8 regions, got {masks.shape[0]}")
    if masks.dtype != torch.float32 or not masks.is_contiguous() or masks.device != feat.device:
        raise ValueError("fused reconstruction: masks must be contiguous float32 on the features' device")
    if tuple(style_mean.shape) != (masks.shape[0], feat.shape[1]):
        raise ValueError(f"fused reconstruction: the style has {tuple(style_mean.shape)} (regions x channels) "
                         f"statistics, the frame {masks.shape[0]} x {feat.shape[1]}")
    if feat.shape[2] * feat.shape[3] >= 2 ** 31:
        raise ValueError("fused reconstruction: at most 2^31 pixels")


def fused_reconstruct(feat, masks, style, mode: str, alpha: float, iterations=None, state=None,
                      floor: float | None = None, share: list[float] | None = None):
    """linear / adain through the one fused op (CUDA kernel on a GPU, reference on the CPU), with the
    warm start of ``state`` (smoothed statistics, the iterative form's offset) carried in and out --
    ``share``: each region's share of the frame's weight (as floats; ReconState decides with them);
    results below ``floor`` are raised to it."""
    from .reconstruct import RegionStats, linear_beta, weight_share
    if mode not in ("linear", "adain"):
        raise ValueError(f"the fused op covers linear and adain, not {mode!r}")
    code = MODE_CODES["linear_iterative" if mode == "linear" and iterations is not None else mode]
    if code == 1:
        from .reconstruct import check_linear_iteration
        linear_beta(alpha)                        # the reference's error for a strength of 1 or more
        check_linear_iteration(alpha)             # as reconstruct(): the iteration diverges from 0.5 on
    check_fused_inputs(feat, masks, style.stats.mean)
    K, C = masks.shape[0], feat.shape[1]
    pm = pv = off0 = None
    carried = False
    if state is not None and share is None:      # direct callers: the regions' shares from the masks (a sync)
        share = weight_share(masks.float().sum((1, 2))).tolist()
    if state is not None:
        if state.carries(K, C, share):
            carried, pm, pv = True, state.content.mean, state.content.var
        if code == 1 and alpha > 0:          # at strength 0 the answer is the content, not the last shift
            off0 = state.warm_offset(K, C, share)
    out, ws, mean, var, off = torch.ops.stylecam.fused_recon(
        feat, masks, style.stats.mean, style.std, float(alpha), code, int(iterations or 0),
        float(state.momentum if state is not None else 0.0), pm, pv, off0, None if floor is None else float(floor))
    if state is not None:
        share_t = weight_share(ws)
        if carried:      # the op's statistics are the mix m*previous + (1-m)*current: this frame's own
            m = state.momentum
            mean, var = (mean - m * pm) / (1 - m), (var - m * pv) / (1 - m)
        state.update(RegionStats(ws, mean, var), share_t, share, masks.amax((1, 2)), off if code == 1 else None)
    return out
