"""Seconds per training iteration of the decoder recipes (the model card's recipe table).

    python benchmarks/train_speed.py [--photos DIR --paintings DIR] [--iterations 40] [--threads 2]
                                     [--json out.json] [--quick]

Each variant runs ``training.train_decoder`` for ``--iterations`` iterations (batch 4, 128^2 crops,
relu3_1) in a temporary run folder and reads the loop's own timing from the decoder file it
writes (data loading and the one-off feature-cache build are not counted; the cache build's
time is reported separately).  PSNR per hour = (PSNR gained per iteration, from the training
logs) x (iterations per hour, from here): caching and smaller mixed crops change the cost of an
iteration far more than what an iteration teaches.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, write_json  # noqa: E402

VARIANTS = {
    "full width, feature loss on mixed 35 %, 128 px": dict(width=1.0, mix_prob=0.35),
    "half width, feature loss on mixed 35 %, 128 px (session 1)": dict(width=0.5, mix_prob=0.35),
    "half width, pixel loss only (lower bound)": dict(width=0.5, mix_prob=0.0),
    "+ feature cache, pixel loss only": dict(width=0.5, mix_prob=0.0, cache_crops=256),
    "+ feature cache, mixed 20 % at 64 px (session 2)": dict(width=0.5, mix_prob=0.2, mix_crop=64,
                                                             cache_crops=256),
}


def main(argv=None) -> int:
    from training import train_decoder as T
    from training.data import DEFAULT_DATA
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(DEFAULT_DATA / "photos"))
    p.add_argument("--paintings", default=str(DEFAULT_DATA / "paintings"))
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="smoke test: 3 iterations, 32 px crops")
    a = p.parse_args(argv)
    crop, load_side = (32, 48) if a.quick else (128, 256)
    iters = 3 if a.quick else a.iterations
    from engines.decoder import load_decoder
    results = {}
    for name, kw in VARIANTS.items():
        kw = dict(kw)
        if a.quick and "cache_crops" in kw:
            kw["cache_crops"] = 8
        with tempfile.TemporaryDirectory() as td:
            cfg = T.TrainConfig(layer="relu3_1", photos=a.photos, paintings=a.paintings, out=str(Path(td) / "d.pt"),
                                run_dir=str(Path(td) / "run"), iterations=iters, crop=crop, load_side=load_side,
                                threads=a.threads, grid_every=10 ** 9, eval_every=10 ** 9, checkpoint_minutes=10 ** 6,
                                **kw)
            t = time.perf_counter()
            T.train(cfg)
            total = time.perf_counter() - t
            spi = load_decoder(cfg.out).meta["seconds_per_iteration"]
        results[name] = {"config": kw, "seconds_per_iteration": spi, "iterations_per_hour": 3600 / spi,
                         "total_seconds": total}
        print(f"{name:<62} {spi:6.3f} s / iteration ({3600 / spi:7.0f} / hour)", flush=True)
    info = machine_info()
    print(f"\n{iters} iterations each, batch 4, {crop} px crops, {a.threads} threads; {info['cpu']} "
          f"({info['cores']} cores), torch {info['torch']}, {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "iterations": iters, "crop": crop, "threads": a.threads,
                            "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
