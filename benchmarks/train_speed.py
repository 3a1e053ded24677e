"""Seconds per training iteration of the decoder recipes (the model card's recipe table).

    python benchmarks/train_speed.py [--photos DIR --paintings DIR] [--iterations 40] [--threads 2]
                                     [--json out.json] [--quick]
    python benchmarks/train_speed.py --recipe gpu --device cuda --from CHECKPOINT \
        --photos gpu_pack/photos --paintings gpu_pack/paintings [--iterations 200] [--profile 30 --profile-out F]

Each variant runs ``training.train_decoder`` for ``--iterations`` iterations (batch 4, 128^2 crops,
relu3_1) in a temporary run folder and reads the loop's own timing from the decoder file it
writes (data loading and the one-off feature-cache build are not counted; the cache build's
time is reported separately).  PSNR per hour = (PSNR gained per iteration, from the training
logs) x (iterations per hour, from here): caching and smaller mixed crops change the cost of an
iteration far more than what an iteration teaches.

``--recipe gpu`` times the lent GPU's recipe instead (batch 16, 256-px crops, a fifth of them mixed at
128 px, averaged weights; ``benchmarks/gpu_session.sh``) in ways that leave the maths alone or nearly:
drawing, encoding and mixing the samples in a thread ahead of the step (``--prefetch 2``), memory layout
(``--channels-last``), cuDNN's algorithm search (``--cudnn-benchmark``), the mixed samples'
whitening-colouring on the host (``--wct-on-cpu``) and bfloat16 autocast (``--amp``), each resumed from a copy of ``--from`` (the decoder shape that will train) and
timed without its first 10 iterations.  It prints the flags of the fastest.  ``--profile N`` then
profiles N iterations of the fastest variant (``train_decoder --profile``) into ``--profile-out``
(of the first, the plain recipe, until session 22, whose H200 profile showed the host's batch as the
wait that ``--prefetch`` then hid; what is left after it is the next question).
Session 9 found the H100 at ~43 ms an iteration where the arithmetic alone needs 10-20 ms, and
bfloat16 only 1.04x faster: the step waits on something else, which this is meant to find.
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

# --recipe gpu: train_decoder settings of benchmarks/gpu_session.sh, and the variants timed against it
GPU_RECIPE = dict(batch=16, crop=256, mix_prob=0.2, mix_crop=128, load_side=256, scale_min=0.5, ema=0.999,
                  revive_every=1000, feat_on_plain=True)     # FEAT_ON_PLAIN=1, gpu_session.sh's default
_FAST = dict(prefetch=2, channels_last=True, cudnn_benchmark=True)
GPU_VARIANTS = {
    "FP32, NCHW (the GPU recipe until session 21)": dict(),
    "+ prefetch": dict(prefetch=2),
    "+ prefetch + wct on the CPU": dict(prefetch=2, wct_on_cpu=True),
    "+ prefetch + channels_last + cuDNN benchmark": dict(_FAST),
    "+ prefetch + channels_last + cuDNN benchmark + wct on the CPU": dict(_FAST, wct_on_cpu=True),
    "+ prefetch + channels_last + cuDNN benchmark + wct on the CPU + bfloat16 autocast": dict(
        _FAST, wct_on_cpu=True, amp=True),
}
FLAGS = {"prefetch": "--prefetch", "channels_last": "--channels-last", "cudnn_benchmark": "--cudnn-benchmark",
         "wct_on_cpu": "--wct-on-cpu", "amp": "--amp"}


def flags_of(kw: dict) -> str:
    """The train_decoder flags of a variant (what gpu_session.sh passes as TRAIN_FLAGS)."""
    return " ".join(FLAGS[k] if v is True else f"{FLAGS[k]} {v}" for k, v in kw.items() if k in FLAGS and v)


def _run(T, cfg, resume_from: str | None) -> None:
    """One timed training run; from a copy of ``resume_from`` (its shape and iteration) when given."""
    import shutil
    import torch
    if resume_from:
        Path(cfg.run_dir).mkdir(parents=True)
        shutil.copyfile(resume_from, Path(cfg.run_dir) / "checkpoint.pt")
        ck = torch.load(resume_from, map_location="cpu", weights_only=False)
        c = ck["config"]
        cfg.width, cfg.extra_convs, cfg.extra_dilations = c["width"], c.get("extra_convs", 0), c.get("extra_dilations", "")
        cfg.centre_input = bool(c.get("centre_input", False))
        cfg.iterations += ck["iteration"]
    T.train(cfg, resume=bool(resume_from))


def main(argv=None) -> int:
    from training import train_decoder as T
    from training.data import DEFAULT_DATA
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(DEFAULT_DATA / "photos"))
    p.add_argument("--paintings", default=str(DEFAULT_DATA / "paintings"))
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads: default 2 for --recipe cpu (this project's machine), 0 = torch's own "
                        "choice (all cores) for --recipe gpu, as gpu_session.sh's training runs (session 22 timed "
                        "the GPU variants at 2, which may have slowed --wct-on-cpu's eigendecompositions)")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="smoke test: 3 iterations (gpu recipe: 14), 32 px crops")
    p.add_argument("--recipe", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: the CPU recipes (batch 4, 128 px); gpu: the lent GPU's recipe and its layout "
                        "variants (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--from", dest="from_ckpt", default=None, metavar="CHECKPOINT",
                   help="resume a copy of this training checkpoint in every variant (its decoder's shape); "
                        "default: a fresh half-width decoder")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="--recipe gpu: then profile N iterations of the fastest variant (train_decoder --profile)")
    p.add_argument("--profile-out", default=None, help="where the profile goes (default: print it)")
    p.add_argument("--flags-out", default=None, metavar="FILE",
                   help="--recipe gpu: write the fastest variant's train_decoder flags to FILE, or nothing when it is "
                        "not --min-gain times as fast as the first (benchmarks/gpu_session.sh's TRAIN_FLAGS=auto)")
    p.add_argument("--min-gain", type=float, default=1.1, help="see --flags-out (default: %(default)s)")
    a = p.parse_args(argv)
    if a.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            p.error(f"--device {a.device}: no CUDA GPU is visible here")
    if a.from_ckpt and not Path(a.from_ckpt).is_file():
        p.error(f"--from {a.from_ckpt}: no such checkpoint")
    gpu = a.recipe == "gpu"
    if a.threads is None:
        a.threads = 0 if gpu else 2
    if gpu:
        variants, base = GPU_VARIANTS, dict(GPU_RECIPE)
        if a.quick:
            base.update(batch=4, crop=32, mix_crop=16, load_side=48)
    else:
        variants, base = VARIANTS, dict(batch=4, crop=32 if a.quick else 128, load_side=48 if a.quick else 256)
    iters = (14 if gpu else 3) if a.quick else a.iterations
    from engines.decoder import load_decoder
    results = {}

    def config(td: str, kw: dict, iterations: int, profile: int = 0):
        return T.TrainConfig(layer="relu3_1", photos=a.photos, paintings=a.paintings, out=str(Path(td) / "d.pt"),
                             run_dir=str(Path(td) / "run"), iterations=iterations, threads=a.threads, device=a.device,
                             grid_every=10 ** 9, eval_every=10 ** 9, checkpoint_minutes=10 ** 6, profile=profile,
                             **{**base, **kw})

    for name, kw in variants.items():
        kw = dict(kw)
        if a.quick and "cache_crops" in kw:
            kw["cache_crops"] = 8
        with tempfile.TemporaryDirectory() as td:
            cfg = config(td, kw, iters)
            t = time.perf_counter()
            try:
                _run(T, cfg, a.from_ckpt if gpu else None)
            except Exception as e:  # noqa: BLE001 -- a variant that fails is reported; the others still run
                if not gpu:
                    raise
                results[name] = {"config": kw, "error": repr(e), "flags": flags_of(kw)}
                print(f"{name:<62} failed: {e!r}", flush=True)
                continue
            total = time.perf_counter() - t
            meta = load_decoder(cfg.out).meta
        spi = meta.get("seconds_per_iteration_steady") if gpu else None
        spi = spi or meta["seconds_per_iteration"]
        results[name] = {"config": kw, "seconds_per_iteration": spi, "iterations_per_hour": 3600 / spi,
                         "total_seconds": total, **({"flags": flags_of(kw)} if gpu else {})}
        print(f"{name:<62} {spi:6.3f} s / iteration ({3600 / spi:7.0f} / hour)", flush=True)
    info = machine_info(argv, __file__)
    print(f"\n{iters} iterations each, batch {base['batch']}, {base['crop']} px crops, "
          f"{a.device}{'' if a.device != 'cpu' else f', {a.threads} threads'}; {info['cpu']} "
          f"({info['cores']} cores), torch {info['torch']}, {info['date']}")
    timed = [n for n in results if "error" not in results[n]]
    if not timed:
        print("every variant failed", file=sys.stderr)
        return 1
    best = min(timed, key=lambda n: results[n]["seconds_per_iteration"])
    if gpu and next(iter(results)) not in timed:
        print(f"the plain recipe failed: no flags chosen (fastest that ran: {best})")
        if a.flags_out:
            Path(a.flags_out).write_text("")
    elif gpu:
        first = next(iter(results))
        gain = results[first]["seconds_per_iteration"] / results[best]["seconds_per_iteration"]
        print(f"fastest: {best} ({gain:.2f}x the first); its flags: TRAIN_FLAGS=\"{results[best]['flags']}\"")
        if a.flags_out:
            Path(a.flags_out).write_text(results[best]["flags"] + "\n" if gain >= a.min_gain else "")
    profiled = None
    if gpu and a.profile:           # the fastest variant, N iterations after 10 under torch.profiler
        with tempfile.TemporaryDirectory() as td:
            try:
                _run(T, config(td, results[best]["config"], 10 + a.profile, a.profile), a.from_ckpt)
            except Exception as e:  # noqa: BLE001 -- the timings above stand without it
                print(f"profile failed: {e!r}", flush=True)
            else:
                profiled = best
                text = (Path(td) / "run" / "profile.txt").read_text()
                if a.profile_out:
                    Path(a.profile_out).write_text(f"# variant: {best}\n" + text)
                    print(f"profile of {a.profile} iterations of {best!r} -> {a.profile_out}")
                else:
                    print(text)
    if a.json:
        write_json(a.json, {"machine": info, "recipe": a.recipe, "device": a.device, "iterations": iters,
                            "batch": base["batch"], "crop": base["crop"], "threads": a.threads,
                            "from": a.from_ckpt, "results": results, "fastest": best,
                            **({"profiled": profiled} if profiled else {})})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
