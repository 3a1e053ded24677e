"""Drop a training checkpoint's optimizer state, so that it is small enough to commit.

A relu3_1 checkpoint at full width is 6.7 MB with Adam's two moment buffers and 2.2 MB without;
the project's committed checkpoints travel to a lent GPU beside the packed training set, under a
64 MiB limit (benchmarks/gpu_session.sh).  ``train_decoder --resume`` continues a slimmed
checkpoint with a fresh Adam (it warns); ``--warmup N`` ramps the rate up over the first N
iterations, which a fresh Adam needs (session 5's CPU probe: without it the held-out PSNR fell
1.5 dB in 50 iterations at 2e-4).  Model, iteration count, history and random states are kept.  A
checkpoint of a run with ``--ema`` keeps only its averaged weights, as its model: those are what the
run exported (the shipped decoder), and a second copy would double the file.

    python -m training.slim_checkpoint runs/gpu_relu3_1/checkpoint.pt \\
        --out weights/checkpoints/decoder_relu3_1_wide_train.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.weights import atomic_torch_save  # noqa: E402
from training.train_decoder import read_checkpoint_or_exit  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.slim_checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="training checkpoint of training.train_decoder")
    p.add_argument("--out", required=True, help="where to write the slimmed checkpoint")
    a = p.parse_args(argv)
    src = Path(a.checkpoint)
    ck = read_checkpoint_or_exit(p, src)
    src_mb = src.stat().st_size / 1e6           # before writing: --out may be the same file
    slim = {k: v for k, v in ck.items() if k not in ("optim", "ema", "ema_updates")}
    if "ema" in ck:
        slim["model"] = ck["ema"]
    atomic_torch_save(slim, Path(a.out))
    print(f"{src} ({src_mb:.1f} MB, iteration {ck['iteration']}) -> {a.out} "
          f"({Path(a.out).stat().st_size / 1e6:.1f} MB, no optimizer state"
          + (", the averaged weights as its model)" if "ema" in ck else ")"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
