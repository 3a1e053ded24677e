"""One fused call per kernel variant at 720p (relu3_1 features, K=3, adain), each between
cudaProfilerStart and cudaProfilerStop, for Nsight Compute to profile: why pass 1 reads at
~1.5 TB/s where pass 2 moves ~2.8 TB/s (the H100 profile of benchmarks/kernel.py --profile).

    ncu --profile-from-start off --section SpeedOfLight --section MemoryWorkloadAnalysis \\
        --section Occupancy --section WarpStateStats --section LaunchStats \\
        python benchmarks/kernel_ncu.py auto prefetch2

(benchmarks/gpu_session.sh runs this when the device has ncu and lets it read the counters.)
Without ncu it runs the same calls and prints their CUDA-event times, so it can be tried anywhere
with a GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from benchmarks.kernel import cuda_time
    from realtime import kernels
    from realtime import reconstruct as R
    variants = (argv if argv is not None else sys.argv[1:]) or ["auto"]
    if {"-h", "--help"} & set(variants):
        print(__doc__.strip() + "\n\nusage: python benchmarks/kernel_ncu.py [VARIANT ...]   (default: auto)")
        return 0
    if not torch.cuda.is_available():
        print("benchmarks/kernel_ncu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    kernels.build_extension()
    h, w = 180, 320
    f = (torch.randn(1, 256, h, w, device="cuda") * 10).relu().half()
    m = torch.rand(3, h, w, device="cuda")
    m = m / m.sum(0, keepdim=True)
    fs = (torch.randn(256, 64, 64, device="cuda") * 10).relu()
    style = R.StyleStats.from_features(fs, torch.ones(3, 64, 64, device="cuda") / 3)
    for v in variants:
        kernels.set_tuning(v)
        call = lambda: kernels.fused_reconstruct(f, m, style, "adain", 1.0, floor=0.0)  # noqa: E731
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        print(f"== {v}: the profiled call", flush=True)
        torch.cuda.profiler.start()
        call()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"{v}: {cuda_time(call, 20) * 1000:.1f} us eager (CUDA events; meaningless under ncu)")
    kernels.set_tuning()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
