"""The fused masked-reconstruction kernel against the unfused PyTorch reference, on a GPU.

    python benchmarks/kernel.py [--json out.json] [--dtype fp16]

relu3_1 features (256 channels at 1/4 resolution) of 480p, 720p and 1080p frames, K=3 soft
regions, ``adain`` and exact ``linear``.  Time is the median of CUDA-event-timed runs after a
warm-up.  Achieved bandwidth counts the bytes the fused op must move (features read twice,
written once, masks read twice) and is given as a percentage of this device's measured
device-to-device copy bandwidth.  Targets (the kernel issue): >= 80 % of copy bandwidth, and
>= 3x faster than the reference at 720p.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, write_json  # noqa: E402


def cuda_time(fn, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def copy_bandwidth() -> float:
    """GB/s of a large device-to-device copy (read + write)."""
    x = torch.empty(256 * 1024 * 1024 // 4, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x), 20)
    return 2 * x.numel() * 4 / (ms / 1000) / 1e9


def main(argv=None) -> int:
    from realtime import kernels
    from realtime import reconstruct as R
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/kernel.py needs a CUDA GPU", file=sys.stderr)
        return 2
    kernels.build_extension()
    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    bw = copy_bandwidth()
    rows = []
    for name, (H, W) in {"480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920)}.items():
        h, w = (H + 3) // 4, (W + 3) // 4
        f = (torch.randn(1, 256, h, w, device="cuda") * 10).relu().to(dtype)
        m = torch.rand(3, h, w, device="cuda")
        m = m / m.sum(0, keepdim=True)
        fs = (torch.randn(256, 64, 64, device="cuda") * 10).relu()
        style = R.StyleStats.from_features(fs, torch.ones(3, 64, 64, device="cuda") / 3)
        for mode in ("adain", "linear"):
            fused = cuda_time(lambda: kernels.fused_reconstruct(f, m, style, mode, 1.0))
            ref = cuda_time(lambda: R.reconstruct(f, m, style, mode, 1.0, use_kernel=False))
            nbytes = 3 * f.numel() * f.element_size() + 2 * m.numel() * 4
            rows.append({"frame": name, "features": f"256x{h}x{w}", "mode": mode, "dtype": a.dtype,
                         "fused_ms": fused, "reference_ms": ref, "speedup": ref / fused,
                         "GBps": nbytes / (fused / 1000) / 1e9, "pct_copy_bw": 100 * nbytes / (fused / 1000) / 1e9 / bw})
    info = machine_info()
    print(f"device copy bandwidth: {bw:.0f} GB/s on {info.get('gpu')}\n")
    print("| frame | features | mode | fused ms | reference ms | speed-up | GB/s | % of copy bw |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['frame']} | {r['features']} | {r['mode']} | {r['fused_ms']:.3f} | {r['reference_ms']:.3f} | "
              f"{r['speedup']:.1f}x | {r['GBps']:.0f} | {r['pct_copy_bw']:.0f} % |")
    if a.json:
        write_json(a.json, {"machine": info, "copy_GBps": bw, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
