"""What the decoder's mixed training samples cost to make: the reference (``training.mixing.mix_features``,
the live pipeline's reconstruct one pair at a time) against ``mix_batch`` (each mode once over the
pairs that drew it), on the same pairs and RNG draws.

    python benchmarks/mix_ops.py [--device cpu|cuda] [--pairs 3] [--size 32] [--rounds 6] [--json out.json]

Per batch of ``--pairs`` pairs of relu3_1-sized features (256 x size x size; the defaults are the GPU
recipe's, gpu_session.sh: batch 16 with --mix-prob 0.2, 3.2 mixed pairs a batch, at --mix-crop 128,
32 x 32 features): the number of top-level ATen operations dispatched (each one a launch or more on a GPU,
where the host's time per operation is what made the mixes 14 ms of a batch in session 22's profile)
and the wall time, the median over ``--rounds`` seeds after two warm-up batches.  On the CPU the
time is arithmetic (patch swap's correlation dominates) and both take about as long; the count is
what carries over to a GPU.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from training import mixing  # noqa: E402


def top_level_ops(prof) -> int:
    """ATen operations not nested in another ATen operation (what the caller dispatched)."""
    n = 0
    for e in prof.events():
        if e.name.startswith("aten::") and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")):
            n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--pairs", type=int_at_least(1), default=3,
                   help="mixed pairs per batch (the GPU recipe: 16 x 0.2 = 3.2)")
    p.add_argument("--size", type=int_at_least(2), default=32,
                   help="feature side (crop / 4 at relu3_1; the GPU recipe mixes 128-px crops)")
    p.add_argument("--rounds", type=int_at_least(1), default=6)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("mix_ops.py --device cuda needs a CUDA GPU", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    fp = (torch.randn(a.pairs, 256, a.size, a.size, generator=g) * 2).relu().to(dev)
    fs = (torch.randn(a.pairs, 256, a.size, a.size, generator=g) * 2).relu().to(dev)
    runs = {
        "reference (mix_features, a pair at a time)":
            lambda r: torch.cat([mixing.mix_features(fp[i:i + 1], fs[i:i + 1], r) for i in range(a.pairs)]),
        "mix_batch (a mode at a time)": lambda r: mixing.mix_batch(fp, fs, r),
    }
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    results = {}
    for name, fn in runs.items():
        for seed in range(2):
            fn(random.Random(seed))
        sync()
        ms, ops = [], []
        for seed in range(2, 2 + a.rounds):
            r = random.Random(seed)
            t = time.perf_counter()
            fn(r)
            sync()
            ms.append((time.perf_counter() - t) * 1e3)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(random.Random(seed))
                sync()
            ops.append(top_level_ops(prof))
        results[name] = {"ms_median": statistics.median(ms), "ms": ms, "ops_median": statistics.median(ops), "ops": ops}
        print(f"{name}: {statistics.median(ms):.1f} ms, {statistics.median(ops):.0f} top-level ATen operations "
              f"per batch of {a.pairs} pairs ({min(ops)}-{max(ops)})")
    info = machine_info(argv, __file__)
    if a.json:
        write_json(a.json, {"machine": info, "device": a.device, "pairs": a.pairs, "size": a.size,
                            "rounds": a.rounds, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
