"""The fused masked-reconstruction kernel against the unfused PyTorch reference, on a GPU.

    python benchmarks/kernel.py [--json out.json] [--dtype fp16]

relu3_1 features (256 channels at 1/4 resolution) of 480p, 720p and 1080p frames, K=3 soft
regions, ``adain`` and exact ``linear``.  Two times for each, the median of CUDA-event-timed
runs after a warm-up: *eager*, one call from Python as the pipeline makes it (launch overhead
included), and *graph*, the same call captured in a CUDA graph and replayed, which is the time
the GPU spends on it (the reference is captured the same way where it can be).  Bandwidth is
computed from the graph time.  Achieved bandwidth counts the bytes the fused op must move (features read twice,
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


def graph_time(fn, reps: int = 50) -> float | None:
    """Milliseconds per call of ``fn`` replayed from a CUDA graph of 10 calls; None if it cannot be captured."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(10):
                fn()
    except Exception as e:  # noqa: BLE001 - a reference that syncs cannot be captured: say so, keep eager
        print(f"(not capturable: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
        torch.cuda.synchronize()
        return None
    return cuda_time(g.replay, reps) / 10


def copy_bandwidth() -> float:
    """GB/s of a large device-to-device copy (read + write)."""
    x = torch.empty(256 * 1024 * 1024 // 4, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x), 20)
    return 2 * x.numel() * 4 / (ms / 1000) / 1e9


def summarise_rounds(eager_ms: list[float], graph_ms: list[float | None], nbytes: int, copy_gbps: float) -> dict:
    """One variant's rounds (each the median of its own timed runs) -> the row's times: the median over
    the rounds, and the spread of the achieved share of copy bandwidth (from the graph times, or the
    eager ones where the call could not be captured) over the rounds."""
    graph_ok = all(g is not None for g in graph_ms)
    times = graph_ms if graph_ok else eager_ms
    gbps = lambda ms: nbytes / (ms / 1000) / 1e9  # noqa: E731
    pct = [100 * gbps(t) / copy_gbps for t in times]
    t = statistics.median(times)
    return {"fused_ms": statistics.median(eager_ms), "fused_graph_ms": statistics.median(graph_ms) if graph_ok else None,
            "GBps": gbps(t), "pct_copy_bw": 100 * gbps(t) / copy_gbps,
            "pct_copy_bw_min": min(pct), "pct_copy_bw_max": max(pct), "rounds": len(times)}


def unfused(f, m, style, mode: str):
    """The unfused PyTorch reference: reconstruct()'s own maths for these modes, less its input checks
    (which synchronise to raise clear errors, and would time the checks, not the maths)."""
    from realtime import reconstruct as R
    f32 = f[0].float()
    cs = R.masked_stats(f32, m)
    if mode == "adain":
        out = R.adain(f32, m, cs, style.stats, 1.0)
    else:
        out = R.linear_exact(f32, m, cs.mean, style.stats.mean, 1.0)
    return out.to(f.dtype)[None]


def profile_720p(kernels, R, dtype, reference: bool = True) -> None:
    """Per-kernel CUDA times (torch.profiler) of the fused op and the reference at 720p, adain."""
    from torch.profiler import ProfilerActivity, profile
    h, w = 180, 320
    f = (torch.randn(1, 256, h, w, device="cuda") * 10).relu().to(dtype)
    m = torch.rand(3, h, w, device="cuda")
    m = m / m.sum(0, keepdim=True)
    fs = (torch.randn(256, 64, 64, device="cuda") * 10).relu()
    style = R.StyleStats.from_features(fs, torch.ones(3, 64, 64, device="cuda") / 3)
    runs = [("fused", lambda: kernels.fused_reconstruct(f, m, style, "adain", 1.0))]
    if reference:
        runs.append(("reference", lambda: unfused(f, m, style, "adain")))
    for name, fn in runs:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
        print(f"\n{name}, 720p adain, 20 calls:")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


def main(argv=None) -> int:
    from realtime import kernels
    from realtime import reconstruct as R
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16")
    p.add_argument("--json", default=None)
    p.add_argument("--moments", default="auto,auto+rev,auto+early+rev,quad+even,auto+l2,auto+p256,auto+early,auto+fill,auto+fill+early,auto+solve1,quad,quadpf+even+pdl",
                   help="variants to time, comma-separated: auto (the op's own choice, quad+even+pdl) or a pass-1 layout "
                        "(kernels.set_tuning): warp (a warp per channel), lanes1 (a thread per channel, the "
                        "largest tile), prefetch2 (lanes, half the largest tile, its feature loads issued before "
                        "the mask stage and kept in flight), quad (lanes, the largest tile, 4 lanes per channel: "
                        "whole sectors per load), quadpf (quad with prefetch2's loads in flight); a +even suffix sizes the lanes layouts' blocks to fill whole "
                        "waves evenly, a +solve1 suffix runs the between-pass solve as a kernel of its own instead "
                        "of in pass 2's prologue, a +pdl suffix launches both passes as programmatic dependent "
                        "launches (sm_90+; in auto), +early (with +pdl) launches pass 2 before pass 1's loop, +fill (with +even) runs pass 1 in as many blocks as fit at once, +l2 (with quad) adds L2 eviction hints (features kept in L2 between the passes), +p256 (with quad, not with +l2) loads pass 1's features with L2's 256-byte prefetch, +rev (with quad, not with +l2) runs pass 2 in pass 1's layout walking its spans backwards (it reads first what pass 1 read last, most likely still in L2).  The default list leaves out the layouts that never won on the H100 "
                        "(warp, lanes1, prefetch2: docs/results/kernel_gpu_h100*.json)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every variant this many times, interleaved (each round goes through the list, "
                        "alternately forwards and backwards), and report the median over the rounds with the "
                        "spread of the bandwidth share: to tell variants a point or two apart from the drift of "
                        "one machine (default 1)")
    p.add_argument("--profile", action="store_true",
                   help="also print the CUDA time of every kernel of one fused call and one reference call (720p)")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    for v in a.moments.split(","):
        try:
            kernels.parse_variant(v)
        except ValueError as e:
            p.error(str(e))
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
        ref_times = {}          # the reference does not depend on the variant: timed once per mode
        cases = [(lay, md) for lay in a.moments.split(",") for md in ("adain", "linear")]
        eager = {c: [] for c in cases}
        graph = {c: [] for c in cases}
        errs = {}
        for rnd in range(a.rounds):
            for layout, mode in (cases if rnd % 2 == 0 else cases[::-1]):
                kernels.set_tuning(layout)
                fused_fn = lambda: kernels.fused_reconstruct(f, m, style, mode, 1.0)  # noqa: E731
                ref_fn = lambda: unfused(f, m, style, mode)  # noqa: E731
                if (layout, mode) not in errs:
                    errs[layout, mode] = (fused_fn().float() - ref_fn().float()).abs().max().item()
                if mode not in ref_times:
                    ref_times[mode] = (cuda_time(ref_fn), graph_time(ref_fn))
                eager[layout, mode].append(cuda_time(fused_fn))
                graph[layout, mode].append(graph_time(fused_fn))
        nbytes = 3 * f.numel() * f.element_size() + 2 * m.numel() * 4
        for layout, mode in cases:
            row = summarise_rounds(eager[layout, mode], graph[layout, mode], nbytes, bw)
            ref, ref_g = ref_times[mode]
            fused, fused_g = row["fused_ms"], row["fused_graph_ms"]
            rows.append({"frame": name, "features": f"256x{h}x{w}", "mode": mode, "moments": layout, "dtype": a.dtype,
                         "reference_ms": ref, "speedup": ref / fused, "reference_graph_ms": ref_g,
                         "speedup_graph": ref_g / fused_g if fused_g and ref_g else None,
                         "max_abs_diff": errs[layout, mode], "MB": nbytes / 1e6, **row})
    if a.profile:
        for i, layout in enumerate(a.moments.split(",")):
            kernels.set_tuning(layout)
            print(f"\n== pass-1 variant: {layout}")
            profile_720p(kernels, R, dtype, reference=i == 0)
    kernels.set_tuning()
    info = machine_info(argv, __file__)
    print(f"device copy bandwidth: {bw:.0f} GB/s on {info.get('gpu')}\n")
    fmt = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)  # noqa: E731
    print("| frame | features | mode | fused ms eager / graph | reference ms eager / graph | speed-up eager / graph "
          "| GB/s (graph) | % of copy bw | max abs diff |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['frame']} | {r['features']} | {r['mode']} ({r['moments']}) | {r['fused_ms']:.3f} / {fmt(r['fused_graph_ms'])} | "
              f"{r['reference_ms']:.3f} / {fmt(r['reference_graph_ms'])} | {r['speedup']:.1f}x / "
              f"{fmt(r['speedup_graph'], '{:.1f}x')} | {r['GBps']:.0f} | {r['pct_copy_bw']:.0f} %"
              + (f" ({r['pct_copy_bw_min']:.1f}-{r['pct_copy_bw_max']:.1f})" if r["rounds"] > 1 else "")
              + f" | {r['max_abs_diff']:.2g} |")
    if a.json:
        write_json(a.json, {"machine": info, "copy_GBps": bw, "rounds": a.rounds, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
