"""Train a decoder that inverts the frozen VGG encoder at one layer (Lu et al. 2017, §3.2).

    python -m training.train_decoder --layer relu3_1 --photos DIR --paintings DIR [--max-minutes M]
    python -m training.train_decoder --resume        # continues runs/decoder_relu3_1

Samples (paper §3.2, and what the live pipeline feeds the decoder):
  * plain photo features and plain painting features, with a pixel loss
    (the decoder should give the image back) and the feature loss;
  * features mixed from a random (photo, painting) pair by patch swap (as in the
    paper) or by the linear / adain / wct reconstruction at a random strength,
    with the feature loss only (there is no target image for them).
Loss: ||f(g(F)) - F||^2 on scale-normalised features + pixel MSE on plain
samples + total variation; Adam.  Checkpoints every few minutes, atomically, with
optimizer and RNG state; ``--resume`` continues exactly.  A grid of samples is
written every so often to ``RUN/samples_*.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engines.decoder import Decoder, save_decoder, shipped_decoder_files
from engines.weights import build_encoder, atomic_torch_save, load_encoder_weights
from realtime.images import read_image, write_image
from training.data import DEFAULT_DATA, CropSampler, folder_digest, holdout_names, list_images, load_folder
from training.mixing import MIX_MODES, mix_batch, mix_features  # noqa: F401 -- mix_features: the reference

log = logging.getLogger("training")


@dataclass
class TrainConfig:
    layer: str = "relu3_1"
    photos: str = str(DEFAULT_DATA / "photos")
    paintings: str = str(DEFAULT_DATA / "paintings")
    out: str = ""
    run_dir: str = ""
    holdout_dir: str = ""        # where the held-out portraits are (default: the photos folder)
    encoder_weights: str | None = None
    iterations: int = 20000
    batch: int = 4
    crop: int = 128
    load_side: int = 256
    scale_min: float = 0.5
    scale_max: float = 1.0
    width: float = 0.5
    feat_on_plain: bool = False
    centre_input: bool = False     # subtract a per-channel mean at the decoder's input (Decoder(centre=True))
    extra_convs: int = 0           # more convolutions after the first, at the features' resolution (Decoder(extra=))
    extra_dilations: str = ""      # their dilations, comma-separated, one each ("" = all 1; Decoder(dilations=))
    lr: float = 2e-4               # 1e-3 killed most first-stage channels in 1,500 iterations (session 10)
    lr_final: float = 5e-5
    pixel_weight: float = 1.0
    feat_weight: float = 0.02
    tv_weight: float = 1e-3
    lowres_weight: float = 0.0     # extra pixel MSE between 4x4 averages of output and photo (lowres_loss)
    smooth: float = 0.0            # share of plain crops blurred (sigma 1-8 px): smooth regions (CropSampler)
    mix_prob: float = 0.35
    mix_crop: int = 0            # crop side of mixed samples (0 = crop); smaller makes their feature loss cheaper
    cache_crops: int = 0         # plain crops whose features are computed once and kept (FP16) in RUN; 0 = live
    seed: int = 0
    stop_after: int = 0          # stop (with a checkpoint) after this many iterations in this run; 0 = never
    max_minutes: float = 0.0     # stop (with a checkpoint) after this much wall time in this run; 0 = never
    lr_by_time: bool = False     # with max_minutes: the schedule follows this run's elapsed time, not iterations
    threads: int = 0
    device: str = "cpu"
    checkpoint_minutes: float = 5.0
    grid_every: int = 500
    eval_every: int = 500
    warmup: int = 0              # this run's first N iterations ramp the rate up from lr/N (fresh optimizer state)
    amp: bool = False            # forward passes under bfloat16 autocast (weights, Adam and losses stay FP32)
    revive_every: int = 0        # every N iterations give dead channels fresh weights (training/revive.py); 0 = never
    first_lr_mult: float = 1.0   # the first convolution trains at this times the rate (param_groups)
    ema: float = 0.999           # decay of a moving average of the weights, exported and evaluated (ema_decay); 0 = off
    channels_last: bool = False  # encoder, decoder and batches in channels_last memory format (same maths, other layout)
    cudnn_benchmark: bool = False  # let cuDNN time its algorithms for each new shape (CUDA only)
    wct_on_cpu: bool = False     # mixed samples' wct on the host CPU (training/mixing.py; CUDA only)
    prefetch: int = 0            # draw batches in a thread up to this many ahead of the loop (Prefetcher); 0 = in the loop
    profile: int = 0             # profile this many iterations (after 10 warm-up ones) with torch.profiler: RUN/profile.txt


# the progress bar reads the losses (a host-device synchronisation on CUDA) every this many iterations,
# so that the host can queue the next iteration's work while the device still runs this one's
LOG_EVERY = 10


def _phase(on: bool):
    """A named range for --profile (torch.profiler.record_function), or nothing."""
    return torch.profiler.record_function if on else (lambda name: contextlib.nullcontext())


def _contiguous(state: dict) -> dict:
    """A state dict with plain (NCHW-contiguous) tensors, whatever --channels-last made of them."""
    return {k: v.contiguous() if torch.is_tensor(v) else v for k, v in state.items()}


def write_profile(prof, path: Path, iterations: int, seconds: float, device: torch.device,
                  batch_seconds: list[float] | None = None, batches_in: str = "the loop") -> str:
    """--profile: the named phases of an iteration (host time, including any wait for the device) and the
    operators that cost most, host and device, per iteration; written atomically to ``path``.
    ``batch_seconds``: the host time of each batch made in the window, timed by BatchSource itself -- with
    --prefetch its thread's phases and operators are missing from the tables (torch.profiler records the
    thread that started it), so this line is what says whether the thread keeps up."""
    ev = prof.key_averages()
    per = 1e-3 / max(1, iterations)                       # microseconds in total -> ms per iteration
    dev_attr = "self_device_time_total" if device.type != "cpu" else None
    lines = [f"# torch.profiler over {iterations} training iterations on {device}: "
             f"{seconds / max(1, iterations) * 1e3:.1f} ms per iteration of wall time (profiler on)",
             "", "phase (host ms per iteration, including waits for the device)"]
    for e in sorted((e for e in ev if e.key.startswith("step.")), key=lambda e: -e.cpu_time_total):
        lines.append(f"  {e.key:<20} {e.cpu_time_total * per:8.2f} ms   calls {e.count}")
    if batch_seconds:
        lines.append(f"batches made in {batches_in}: {len(batch_seconds)}, host ms each (crops, encoder, mixes, "
                     f"including waits for the device) {1e3 * sum(batch_seconds) / len(batch_seconds):.2f} mean, "
                     f"{1e3 * max(batch_seconds):.2f} max")
    lines += ["", "operators by self host time:", ev.table(sort_by="self_cpu_time_total", row_limit=25)]
    if dev_attr is not None:
        try:
            lines += ["operators by self device time:", ev.table(sort_by=dev_attr, row_limit=25)]
        except (AttributeError, KeyError) as e:          # a torch that names the column otherwise
            lines += [f"(no device-time table: {e})"]
    text = "\n".join(lines) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def param_groups(dec: Decoder, first_lr_mult: float):
    """Adam's parameter groups: one, or with ``first_lr_mult`` != 1 the first convolution apart, at that
    multiple of the rate (its ``lr_mult``).  Why: a ReLU channel's incoming weights all see the same
    non-negative input, so their gradients share a sign, and Adam moves each of them by about the rate
    whatever the gradient's size; the channel's pre-activation then moves by about rate x fan-in x the
    input's mean on every pixel at once.  The first convolution has by far the largest fan-in (relu3_1:
    256 x 9, relu4_1: 512 x 9) and is where the decoders' channels died (session 10; session 14 saw relu4_1's
    revived ones die again within 500 iterations at 2e-4).  Adam's step scaled inversely with fan-in
    is also what muP prescribes for hidden layers (Yang et al. 2021, Tensor Programs V)."""
    if first_lr_mult == 1.0:
        return [{"params": list(dec.parameters())}]
    from training.revive import _convs
    first = _convs(dec)[0]
    ids = {id(p) for p in first.parameters()}
    return [{"params": list(first.parameters()), "lr_mult": first_lr_mult},
            {"params": [p for p in dec.parameters() if id(p) not in ids], "lr_mult": 1.0}]


def ema_decay(cfg: TrainConfig, n: int) -> float:
    """The decay of the weights' exponential moving average at its ``n``-th update (--ema D): min(D, (1 + n) /
    (10 + n)), the usual ramp, so that the average soon forgets the weights it started from (a fresh decoder's
    random ones).  Polyak & Juditsky 1992 for averaging the iterates; the ramp as in TensorFlow's
    ExponentialMovingAverage(num_updates).  Session 13's CPU probes at batch 4 and a constant rate swung by up
    to 1 dB held out (2-3 dB on single portraits) from one 1,000-iteration checkpoint to the next: the last
    iterate of a noisy run is a poor estimate of where it is heading."""
    return min(cfg.ema, (1 + n) / (10 + n))


@torch.no_grad()
def ema_update(avg: Decoder, dec: Decoder, decay: float) -> None:
    """avg <- avg + (1 - decay) (dec - avg), every parameter at once: one multi-tensor lerp (a launch or
    two on a GPU) instead of one per parameter tensor, each element the same lerp (tests/test_training.py)."""
    torch._foreach_lerp_([a.data for a in avg.parameters()], [p.data for p in dec.parameters()], 1.0 - decay)


def lr_at(cfg: TrainConfig, it: int, elapsed: float | None = None, run_it: int | None = None) -> float:
    """Constant for the first half, then cosine down to ``lr_final``.  Halves of the iterations, or,
    with ``lr_by_time`` (and ``max_minutes``), of this run's wall time ``elapsed`` (seconds): a
    lent GPU's fixed minutes then end on an annealed model whatever its speed turns out to be.
    ``run_it``: iterations done in this run; with ``warmup`` the first ones are scaled by
    (run_it + 1) / warmup (Adam's first steps from a fresh state move every weight by about the
    rate at once: session 5 saw a widened decoder lose up to 1.5 dB that way before recovering)."""
    ramp = min(1.0, (run_it + 1) / cfg.warmup) if cfg.warmup and run_it is not None else 1.0
    return ramp * _schedule(cfg, it, elapsed)


def _schedule(cfg: TrainConfig, it: int, elapsed: float | None) -> float:
    if cfg.lr_by_time and cfg.max_minutes and elapsed is not None:
        frac = min(1.0, elapsed / (cfg.max_minutes * 60))
    else:
        frac = it / max(1, cfg.iterations)
    if frac < 0.5:
        return cfg.lr
    t = (frac - 0.5) / 0.5
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * min(1.0, t)))


def revive_in_training(dec: Decoder, opt: torch.optim.Optimizer, enc, sp: CropSampler, ss: CropSampler,
                       seed: int, device, n: int = 64) -> list[list[int]]:
    """--revive-every: channels that are zero on every pixel of ``n`` fresh crops get fresh incoming weights
    and zero outgoing ones (training/revive.py, ReDo), and Adam forgets its moments for those weights.  The
    crops are drawn like ``sp``'s and ``ss``'s from an RNG of their own seeded by ``seed`` (which the loop
    derives from the iteration), so an interrupted and resumed run revives the same channels, and the
    batches' RNG, which may run ahead in a thread (--prefetch), is left alone."""
    from training.revive import _convs, channel_scores, revive_dormant
    rng = random.Random(seed)
    sp, ss = (CropSampler(x.images, x.crop, x.scale, rng, smooth=x.smooth, smooth_sigma=x.smooth_sigma) for x in (sp, ss))
    with torch.no_grad():
        imgs = to_tensor([sp.sample() if rng.random() < 0.6 else ss.sample() for _ in range(n)], device)
        feats = [enc(imgs[i:i + 4]).float() for i in range(0, n, 4)]
        was_training = dec.training
        dec.eval()
        # only channels dead on every pixel: a channel quiet on these few crops may still be a rare feature
        revived = revive_dormant(dec, channel_scores(dec, feats), feats, tau=0.0, seed=seed)
        dec.train(was_training)
    convs = _convs(dec)
    for k, idx in enumerate(revived):
        if not idx:
            continue
        for p, sl in ((convs[k].weight, idx), (convs[k].bias, idx), (convs[k + 1].weight, (slice(None), idx))):
            st = opt.state.get(p)
            if st:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key][sl] = 0
    return revived


@torch.no_grad()
def copy_revived(avg: Decoder, dec: Decoder, revived: list[list[int]]) -> None:
    """--ema with --revive-every: a revived channel's fresh incoming weights and zero outgoing ones go into the
    average as they are (averaging them with the dead ones would bring back outgoing weights of a channel
    that is alive again, and change the averaged decoder's output)."""
    from training.revive import _convs
    ca, cd = _convs(avg), _convs(dec)
    for k, idx in enumerate(revived):
        if idx:
            ca[k].weight[idx] = cd[k].weight[idx]
            ca[k].bias[idx] = cd[k].bias[idx]
            ca[k + 1].weight[:, idx] = cd[k + 1].weight[:, idx]


@dataclass
class Batch:
    """One iteration's samples: ``n_plain`` crops (``targets``) with their features, ``n_mix`` mixed features."""
    n_plain: int
    n_mix: int
    targets: torch.Tensor | None
    f_plain: torch.Tensor | None
    f_mix: torch.Tensor | None
    rng_state: tuple              # the batches' RNG after drawing this one: what a checkpoint keeps
    event: object = None          # --prefetch on CUDA: recorded on the drawing thread's stream after it


class BatchSource:
    """Each iteration's samples, drawn from one RNG (the run's ``py_rng``) and nothing else: which of the
    batch are mixed, the crops (or cached crops), their encoder features and the mixes (paper §3.2; see
    the module doc).  ``make`` runs in the loop, or (--prefetch) in a thread ahead of it: the same batches
    in the same order either way."""

    def __init__(self, cfg: "TrainConfig", enc, rng: random.Random, samplers: tuple, cache, dev, fmt, amp, phase):
        self.cfg, self.enc, self.rng, self.cache, self.dev = cfg, enc, rng, cache, dev
        self.sp, self.ss, self.sp_mix, self.ss_mix = samplers
        self.fmt, self.amp, self.phase = fmt, amp, phase
        self.seconds: list[float] = []      # --profile: host time of each make (it reports those of its window)

    def make(self) -> Batch:
        t = time.perf_counter()
        b = self._make()
        if self.cfg.profile:
            self.seconds.append(time.perf_counter() - t)
        return b

    @torch.no_grad()
    def _make(self) -> Batch:
        cfg, rng, dev, enc, fmt = self.cfg, self.rng, self.dev, self.enc, self.fmt
        n_mix = sum(rng.random() < cfg.mix_prob for _ in range(cfg.batch))
        n_plain = cfg.batch - n_mix
        targets = f_plain = f_mix = None
        with self.amp():
            with self.phase("step.data+encode"):
                if n_plain and self.cache is not None:
                    targets, f_plain = self.cache.batch([rng.randrange(len(self.cache)) for _ in range(n_plain)], dev)
                    targets, f_plain = fmt(targets), fmt(f_plain)
                elif n_plain:
                    targets = fmt(to_tensor([self.sp.sample() if rng.random() < 0.6 else self.ss.sample()
                                             for _ in range(n_plain)], dev))
                    f_plain = enc(targets)
                if n_mix:
                    fp = enc(fmt(to_tensor([self.sp_mix.sample() for _ in range(n_mix)], dev)))
                    fs = enc(fmt(to_tensor([self.ss_mix.sample() for _ in range(n_mix)], dev)))
        # the mixes outside the autocast (--amp): under it their matrix products -- wct's whitening and
        # colouring above all -- ran in bfloat16 (until session 27: a wct mix's mean 33 % off the FP32 one)
        if n_mix:
            with self.phase("step.mix"):
                f_mix = fmt(mix_batch(fp, fs, rng, cfg.wct_on_cpu))
        return Batch(n_plain, n_mix, targets, f_plain, f_mix, rng.getstate())


class Prefetcher:
    """--prefetch N: ``source.make`` in a thread of its own, up to N batches ahead of the loop, and on CUDA on a
    stream of its own, so that drawing crops, encoding and mixing -- host work, and the host-device waits of
    the mixes' small solves -- overlap the loop's forward and backward passes (the loop waits for a batch's
    event before using it).  An exception in the thread is raised by ``get``."""

    def __init__(self, source: BatchSource, depth: int, dev: torch.device):
        self.source, self.q, self.stop = source, queue.Queue(maxsize=max(1, depth)), threading.Event()
        self.stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self.thread = threading.Thread(target=self._run, name="training-batches", daemon=True)
        self.thread.start()

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.stream is None:
                    b = self.source.make()
                else:
                    with torch.cuda.stream(self.stream):
                        b = self.source.make()
                        b.event = torch.cuda.Event()
                        b.event.record(self.stream)
                self._put(b)
        except BaseException as e:  # noqa: BLE001 -- handed to the loop
            self._put(e)

    def get(self) -> Batch:
        b = self.q.get()
        if isinstance(b, BaseException):
            raise RuntimeError(f"drawing a training batch failed: {b!r}") from b
        if b.event is not None:
            cur = torch.cuda.current_stream(self.source.dev)
            cur.wait_event(b.event)
            for t in (b.targets, b.f_plain, b.f_mix):
                if t is not None:
                    t.record_stream(cur)   # their memory is not reused until the loop's stream is done with them
        return b

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.q.get_nowait()        # a thread waiting on a full queue sees the stop
            except queue.Empty:
                pass
            self.thread.join(timeout=0.1)


def to_tensor(batch: list[np.ndarray], device=None) -> torch.Tensor:
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
    return (x.to(device) if device is not None else x).float().div_(255.0)


def _tv(y: torch.Tensor) -> torch.Tensor:
    return (y[..., 1:, :] - y[..., :-1, :]).pow(2).mean() + (y[..., :, 1:] - y[..., :, :-1]).pow(2).mean()


def lowres_loss(y: torch.Tensor, target: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """MSE between ``factor`` x ``factor`` block averages of the output and the photo: the error in
    regional tone only (at relu3_1's grid for factor 4).  Session 12 found the decoders' error mostly
    there (benchmarks/autoencoder.py: blurred, the wide decoder's PSNR rises only 25.5 -> 27.2 dB, while
    the photo reduced 4x and enlarged back scores 31.4), so --lowres-weight W adds W times this to the
    pixel loss, weighting regional tone above fine detail.  (A remainder of rows or columns past the
    last whole block is left out.)"""
    return F.mse_loss(F.avg_pool2d(y, factor), F.avg_pool2d(target, factor))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def measure_feat_stats(enc, sampler_p, sampler_s, n: int = 32, device=None, centre: bool = False):
    """The decoder's input statistics on n crops (half photos, half paintings): (mean, scale), each
    1 x C x 1 x 1; the mean is zero unless ``centre`` (Decoder(centre=True)), and the scale is the
    per-channel RMS about it, floored at 5 % of the mean RMS."""
    x = to_tensor([sampler_p.sample() for _ in range(n // 2)] + [sampler_s.sample() for _ in range(n // 2)], device)
    f = enc(x)
    mean = f.mean((0, 2, 3), keepdim=True) if centre else torch.zeros_like(f[:1, :, :1, :1])
    rms = (f - mean).pow(2).mean((0, 2, 3)).sqrt()
    return mean, rms.clamp_min(0.05 * float(rms.mean())).view(1, -1, 1, 1)


@torch.no_grad()
def eval_holdout(enc, dec, images: list[np.ndarray], device=None) -> float:
    vals = []
    for img in images:
        x = to_tensor([img], device)
        y = dec(enc(x), out_size=x.shape[-2:])
        vals.append(psnr(y, x))
    return float(np.mean(vals)) if vals else float("nan")


def save_grid(path: Path, x: torch.Tensor, y: torch.Tensor) -> None:
    top = (x.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    bot = (y.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    grid = np.concatenate([np.concatenate(list(top), 1), np.concatenate(list(bot), 1)], 0)
    write_image(path, grid)        # atomic, and any path (OpenCV's imwrite fails on non-ASCII ones on Windows)


class FeatureCache:
    """A fixed set of plain crops and their encoder features, computed once and stored on disk.

    The encoder forward pass is about half the cost of a pixel-loss step on a CPU; a
    fixed set of crops (the issue's suggestion) removes it from the loop.  Images are kept
    as uint8, features as FP16 (the decoder input is scale-normalised, so FP16 is ample).
    The set is drawn with its own RNG (seed + 1), so it is the same on every resume, and
    written to a temporary name and renamed, so an interrupted build leaves nothing behind.
    """

    def __init__(self, images: np.ndarray, feats: np.ndarray):
        self.images, self.feats = images, feats

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: list[int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor([self.images[i] for i in idx], device)
        f = torch.from_numpy(np.stack([self.feats[i] for i in idx]))
        f = (f.to(device) if device is not None else f).float()
        return x, f

    @staticmethod
    def build_or_load(run: Path, cfg: "TrainConfig", enc, photos, paintings, encoder_id: str,
                      dev=None) -> "FeatureCache":
        key = {"layer": cfg.layer, "n": cfg.cache_crops, "crop": cfg.crop, "seed": cfg.seed,
               "load_side": cfg.load_side, "scale": [cfg.scale_min, cfg.scale_max], "encoder_id": encoder_id,
               "photos": len(photos), "paintings": len(paintings),
               "photos_digest": folder_digest(cfg.photos), "paintings_digest": folder_digest(cfg.paintings),
               **({"smooth": cfg.smooth} if cfg.smooth else {})}  # (absent when off)
        stem = run / f"feature_cache_{cfg.layer}_{cfg.cache_crops}"
        meta_p, img_p, feat_p = stem.with_suffix(".json"), stem.with_suffix(".img.npy"), stem.with_suffix(".feat.npy")
        if meta_p.exists() and img_p.exists() and feat_p.exists():
            try:
                same = json.loads(meta_p.read_text()) == key
            except ValueError:
                same = False
            if same:
                log.info("using the feature cache %s (%d crops)", stem, cfg.cache_crops)
                return FeatureCache(np.load(img_p, mmap_mode="r"), np.load(feat_p, mmap_mode="r"))
            log.info("feature cache %s is for another configuration: rebuilding", stem)
        # the key goes first and comes back last: a rebuild cut short never leaves an old key
        # beside new data (or the reverse)
        meta_p.unlink(missing_ok=True)
        rng = random.Random(cfg.seed + 1)
        sp = CropSampler(photos, cfg.crop, (cfg.scale_min, cfg.scale_max), rng, smooth=cfg.smooth)
        ss = CropSampler(paintings, cfg.crop, (cfg.scale_min, cfg.scale_max), rng, smooth=cfg.smooth)
        n, chunk = cfg.cache_crops, 16
        imgs = np.empty((n, cfg.crop, cfg.crop, 3), np.uint8)
        feats = None
        with torch.no_grad():
            for s in tqdm(range(0, n, chunk), desc="feature cache", unit="batch"):
                crops = [sp.sample() if rng.random() < 0.6 else ss.sample() for _ in range(min(chunk, n - s))]
                f = enc(to_tensor(crops, dev)).half().cpu().numpy()
                if feats is None:
                    feats = np.lib.format.open_memmap(feat_p.with_suffix(".tmp.npy"), "w+", np.float16,
                                                      (n,) + f.shape[1:])
                feats[s:s + len(crops)] = f
                imgs[s:s + len(crops)] = np.stack(crops)
        feats.flush()
        del feats
        os.replace(feat_p.with_suffix(".tmp.npy"), feat_p)
        np.save(img_p.with_suffix(".tmp.npy"), imgs)
        os.replace(img_p.with_suffix(".tmp.npy"), img_p)
        meta_p.with_suffix(".tmp.json").write_text(json.dumps(key))
        os.replace(meta_p.with_suffix(".tmp.json"), meta_p)
        return FeatureCache(np.load(img_p, mmap_mode="r"), np.load(feat_p, mmap_mode="r"))


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint of this module (config, model, iteration, ...), on the CPU; FileNotFoundError
    or ValueError with a message for anything else (the tools that rewrite checkpoints use it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:          # truncated, not a PyTorch file, ...: one line, not a traceback
        raise ValueError(f"{path} cannot be read as a training checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no detail'}); a copy cut short?") from None
    if not isinstance(ck, dict) or not {"config", "model", "iteration"} <= set(ck):
        raise ValueError(f"{path} is not a training checkpoint of training.train_decoder")
    return ck


def extra_dilations(cfg: dict) -> tuple[int, ...]:
    """The extra convolutions' dilations a training config records (``extra_dilations``, "" = all 1)."""
    spec = str(cfg.get("extra_dilations", "") or "")
    return tuple(int(x) for x in spec.split(",")) if spec else (1,) * int(cfg.get("extra_convs", 0))


def dilations_spec(dilations) -> str:
    """How a training config records these dilations: comma-separated, or "" when all are 1 (so an
    undilated run's config, and the decoder file it writes, look as they did before dilations existed).
    The inverse of ``extra_dilations``."""
    dilations = [int(d) for d in dilations]
    return ",".join(map(str, dilations)) if any(d != 1 for d in dilations) else ""


def decoder_from_checkpoint(ck: dict, arch: str) -> Decoder:
    """The Decoder a training checkpoint holds (its config's layer, width and centring, ``arch`` the
    encoder's family): the averaged weights of an ``--ema`` run (what it exported), else its model;
    RuntimeError when the weights do not fit that shape.  (training.revive and training.widen read it,
    and write a checkpoint without an average: training then starts a fresh one from their result.)"""
    cfg = ck["config"]
    dec = Decoder(cfg["layer"], arch, cfg["width"], centre=cfg.get("centre_input", False),
                  extra=cfg.get("extra_convs", 0), dilations=extra_dilations(cfg))
    dec.load_state_dict(ck.get("ema", ck["model"]))
    return dec


def decoder_of_checkpoint_or_exit(parser: argparse.ArgumentParser, ck: dict, src: str | Path) -> Decoder:
    """decoder_from_checkpoint for a command line that does not know the encoder's family (training.widen,
    training.deepen): the VGG16 or VGG19 decoder the weights fit; neither ends it with the parser's error."""
    for arch in ("vgg16", "vgg19"):                 # the encoder's family decides the decoder's depth
        try:
            return decoder_from_checkpoint(ck, arch)
        except RuntimeError:
            pass
    cfg = ck["config"]
    parser.error(f"{src}: its model matches no VGG16/VGG19 decoder of layer {cfg['layer']}, width {cfg['width']}")


def same_output_or_exit(old: Decoder, new: Decoder, tol: float, what: str) -> float:
    """The largest difference between two decoders' outputs on a random post-ReLU feature map (odd size, up to
    three times the features' typical scale); above ``tol`` the command ends without writing anything
    (training.widen, training.deepen: reshaping must not change what the decoder computes)."""
    feat = torch.rand(1, old.in_channels, 9, 11) * old.feat_scale * 3
    with torch.no_grad():
        diff = float((new(feat) - old(feat)).abs().max())
    if not diff <= tol:                                  # NaN refuses too
        raise SystemExit(f"{what} changed the output by {diff:.2e}: refusing to write it")
    return diff


def write_reshaped_checkpoint(ck: dict, cfg: dict, dec: Decoder, out: str | Path, **provenance) -> None:
    """A training checkpoint for a decoder reshaped or repaired out of ``ck`` (training.widen, .deepen,
    .revive): its weights, config, iteration, history and RNG states, and where it came from, but no
    optimizer state and no weight average -- neither fits the changed parameters, so ``train_decoder
    --resume`` starts a fresh Adam (and warns), which ``--warmup`` ramps up.  Written atomically."""
    atomic_torch_save({"config": cfg, "model": dec.state_dict(), "iteration": ck["iteration"],
                       "history": list(ck.get("history", [])), "py_rng": ck["py_rng"], "torch_rng": ck["torch_rng"],
                       **provenance}, Path(out))


def read_checkpoint_or_exit(parser: argparse.ArgumentParser, path: str | Path) -> dict:
    """read_checkpoint for a command line: a missing or foreign file ends it with the parser's error."""
    try:
        return read_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))


def run_folder(cfg) -> Path:
    """A run's folder: --run-dir, else runs/decoder_LAYER (``cfg``: a TrainConfig or the parsed options)."""
    return Path(cfg.run_dir or Path("runs") / f"decoder_{cfg.layer}")


def check_outputs(out: Path, run: Path) -> None:
    """Before anything loads: the decoder file and the run folder can be written, and the decoder file is
    not a shipped one (a run writes it at every checkpoint: a half-trained decoder would replace it)."""
    from realtime.output import check_writable
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give a decoder file name (e.g. {out / 'decoder.pt'})")
    if out.resolve() in {p.resolve() for p in shipped_decoder_files()}:
        raise ValueError(f"--out {out} is a shipped decoder, which this run would replace at every "
                         "checkpoint: write to another file and use it with `stylecam --decoder FILE`")
    check_writable(out, "file")
    check_writable(run, "folder")


def check_resumable(ck: dict, cfg: TrainConfig, path: Path) -> None:
    """ValueError, saying what to give instead, when a checkpoint's decoder is another shape than ``cfg``'s."""
    theirs = ck["config"]
    if theirs["layer"] != cfg.layer:
        raise ValueError(f"{path} is a {theirs['layer']} run: resume it with --layer {theirs['layer']}")
    if theirs["width"] != cfg.width:
        raise ValueError(f"{path} is a width-{theirs['width']} decoder: resume it with --width {theirs['width']} "
                         "(training.widen makes a wider one from it)")
    if bool(theirs.get("centre_input", False)) != cfg.centre_input:
        raise ValueError(f"{path} was trained {'with' if not cfg.centre_input else 'without'} "
                         f"--centre-input: resume it with the same setting")
    if int(theirs.get("extra_convs", 0)) != cfg.extra_convs:
        raise ValueError(f"{path} has {theirs.get('extra_convs', 0)} extra convolutions "
                         f"(training.deepen adds them): resume it with --extra-convs "
                         f"{theirs.get('extra_convs', 0)}, not {cfg.extra_convs}")
    if extra_dilations(theirs) != extra_dilations(asdict(cfg)):
        spec = ",".join(map(str, extra_dilations(theirs)))
        raise ValueError(f"{path}'s extra convolutions have dilations {spec}: resume it with "
                         f"--extra-dilations {spec}")


def holdout_images(cfg: TrainConfig) -> list[np.ndarray]:
    """The portraits whose PSNR training reports: the project's held-out ones (training/holdout.txt) found
    in --holdout-dir (default: the photos folder), the first 8; or, when --holdout-dir holds none of them,
    its own first 8 images (a user's held-out photos)."""
    hdir = Path(cfg.holdout_dir or cfg.photos)
    files = [hdir / n for n in sorted(holdout_names()) if (hdir / n).is_file()]
    if not files and cfg.holdout_dir:
        try:
            files = list_images(hdir)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"--holdout-dir: {e}") from None
    imgs = []
    for f in files[:8]:
        try:
            imgs.append(read_image(f))        # as training reads its photos (EXIF orientation applied)
        except (ValueError, OSError):
            log.warning("skipping unreadable held-out image %s", f)
    return imgs


def shrink_for_eval(img: np.ndarray) -> np.ndarray:
    """A held-out portrait resized to 256 px on its longer side, each side a multiple of 4."""
    s = 256 / max(img.shape[:2])
    return cv2.resize(img, (max(4, round(img.shape[1] * s) // 4 * 4), max(4, round(img.shape[0] * s) // 4 * 4)),
                      interpolation=cv2.INTER_AREA)


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = run_folder(cfg)
    out = Path(cfg.out) if cfg.out else run / f"decoder_{cfg.layer}.pt"
    check_outputs(out, run)
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is visible")
    for what, folder in (("photos", cfg.photos), ("paintings", cfg.paintings)):
        if not Path(folder).is_dir():        # before RUN is made: a failed start leaves no empty folder
            raise FileNotFoundError(f"{what} folder not found: {folder} (--{what} DIR)")
    ckpt_path = run / "checkpoint.pt"
    ck = None
    if resume and ckpt_path.exists():        # read and matched before the images load: a mismatch is quick
        ck = read_checkpoint(ckpt_path)
        check_resumable(ck, cfg, ckpt_path)
    elif resume:
        log.warning("--resume: no checkpoint at %s: starting afresh", ckpt_path)
    ew = load_encoder_weights(cfg.encoder_weights)
    enc = build_encoder(cfg.layer, ew, dev)
    if dev.type == "cuda":            # both ways: one process may train several configurations (train_speed.py)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    hold = holdout_names()
    photos = load_folder(cfg.photos, cfg.load_side, hold, "photos")
    paintings = load_folder(cfg.paintings, cfg.load_side, hold, "paintings")
    held = sum((Path(cfg.photos) / n).is_file() for n in hold)     # the project's held-out portraits there
    log.info("training on %d photos and %d paintings (%d held out)", len(photos), len(paintings), held)
    run.mkdir(parents=True, exist_ok=True)
    if ck is None:
        (run / "log.jsonl").unlink(missing_ok=True)      # a fresh run's log starts afresh, not after an old one's
    sp = CropSampler(photos, cfg.crop, (cfg.scale_min, cfg.scale_max), rng, smooth=cfg.smooth)
    ss = CropSampler(paintings, cfg.crop, (cfg.scale_min, cfg.scale_max), rng, smooth=cfg.smooth)
    eval_imgs = [shrink_for_eval(img) for img in holdout_images(cfg)]
    if not eval_imgs:
        log.warning("no held-out portraits in %s: the held-out PSNR is not measured (--holdout-dir DIR "
                    "names a folder of your own held-out photos)", cfg.holdout_dir or cfg.photos)
    dec = Decoder(cfg.layer, ew.arch, cfg.width, centre=cfg.centre_input, extra=cfg.extra_convs,
                  dilations=extra_dilations(asdict(cfg))).to(dev)
    opt = torch.optim.Adam(param_groups(dec, cfg.first_lr_mult), lr=cfg.lr)
    it, history = 0, []
    ema_state, ema_n = None, 0
    if ck is not None:
        try:
            dec.load_state_dict(ck["model"])
        except RuntimeError as e:
            raise ValueError(f"{ckpt_path}: its weights do not fit this decoder (another encoder family, "
                             f"--encoder-weights?): {str(e).splitlines()[0]}") from None
        if "optim" in ck:
            try:
                opt.load_state_dict(ck["optim"])
            except ValueError as e:          # another --first-lr-mult split the parameters into other groups
                raise ValueError(f"{ckpt_path}: its optimizer state does not fit --first-lr-mult "
                                 f"{cfg.first_lr_mult} (it was {ck['config'].get('first_lr_mult', 1.0)}): {e}") from None
        else:
            log.warning("%s has no optimizer state (a slimmed or widened checkpoint): "
                        "a fresh Adam -- --warmup N ramps its rate up", ckpt_path)
        it, history = ck["iteration"], ck["history"]
        if cfg.ema and "ema" in ck:
            ema_state, ema_n = ck["ema"], ck["ema_updates"]
        elif cfg.ema:
            log.info("%s has no weight average: --ema starts one from its weights", ckpt_path)
        rng.setstate(ck["py_rng"])
        torch.set_rng_state(ck["torch_rng"])
        log.info("resumed from %s at iteration %d", ckpt_path, it)
    else:
        mean, sc = measure_feat_stats(enc, sp, ss, device=dev, centre=cfg.centre_input)
        dec.feat_scale.copy_(sc)
        if cfg.centre_input:
            dec.feat_mean.copy_(mean)
    if cfg.channels_last:
        enc = enc.to(memory_format=torch.channels_last)
        dec = dec.to(memory_format=torch.channels_last)   # in place: the optimizer's parameters stay the same
    scale = dec.feat_scale
    avg = None                      # --ema: the averaged decoder, which is evaluated and exported
    if cfg.ema:
        avg = copy.deepcopy(dec).eval().requires_grad_(False)
        if ema_state is not None:
            avg.load_state_dict(ema_state)
    shipped = avg if avg is not None else dec
    cache = FeatureCache.build_or_load(run, cfg, enc, photos, paintings, ew.encoder_id, dev) if cfg.cache_crops else None
    mix_crop = cfg.mix_crop or cfg.crop
    sp_mix = CropSampler(photos, mix_crop, (cfg.scale_min, cfg.scale_max), rng)
    ss_mix = CropSampler(paintings, mix_crop, (cfg.scale_min, cfg.scale_max), rng)

    def checkpoint() -> None:
        atomic_torch_save({"config": asdict(cfg), "model": _contiguous(dec.state_dict()), "optim": opt.state_dict(),
                           "iteration": it, "history": history, "py_rng": batches["rng_state"],
                           "torch_rng": torch.get_rng_state(),
                           **({"ema": _contiguous(avg.state_dict()), "ema_updates": ema_n} if avg is not None else {})},
                          ckpt_path)
        done = it - loop["start_it"]
        meta = {"iterations": it, "config": asdict(cfg), "holdout_psnr_256": history[-1]["psnr"] if history else None,
                "seconds_per_iteration": (time.time() - loop["t0"]) / done if done else None,
                # the same without this run's first 10 iterations (CUDA's and cuDNN's warm-up; benchmarks/train_speed.py)
                "seconds_per_iteration_steady": ((time.time() - loop["t10"]) / (done - 10)
                                                 if done > 10 and loop.get("t10") else None),
                "date": time.strftime("%Y-%m-%d"), **({"ema": cfg.ema} if avg is not None else {})}
        save_decoder(shipped, out, encoder_id=ew.encoder_id, meta=meta)
        log.info("checkpoint at iteration %d -> %s, %s", it, ckpt_path, out)

    stop = {"now": False}
    # --amp: bfloat16 autocast for the forward passes (no loss scaling needed: bfloat16 has FP32's range)
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if cfg.amp else contextlib.nullcontext

    fmt = (lambda x: x.contiguous(memory_format=torch.channels_last)) if cfg.channels_last else (lambda x: x)
    phase = _phase(bool(cfg.profile))
    prof = {"p": None, "at": None, "made": 0}   # profiler, (iteration, time) at its start, batches made before it
    source = BatchSource(cfg, enc, rng, (sp, ss, sp_mix, ss_mix), cache, dev, fmt, amp, phase)
    # the batches' RNG as of the last batch the loop took (with --prefetch the RNG itself runs ahead)
    batches = {"rng_state": rng.getstate(), "prefetcher": None}

    def end_profile() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        prof["p"].stop()
        write_profile(prof["p"], run / "profile.txt", it - prof["at"][0], time.time() - prof["at"][1], dev,
                      source.seconds[prof["made"]:], "the prefetch thread" if cfg.prefetch else "the loop")
        log.info("profile of %d iterations -> %s", it - prof["at"][0], run / "profile.txt")
        prof["p"] = None

    def on_signal(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)

    last_ckpt = time.time()
    loop = {"t0": time.time(), "start_it": it}      # this process's loop speed, recorded in the decoder's meta
    stop_at = it + cfg.stop_after if cfg.stop_after else cfg.iterations
    bar = tqdm(total=cfg.iterations, initial=it, desc=f"decoder {cfg.layer}", unit="it", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30)    # into a log file: a line every 30 s, not every step
    interrupted = False
    run_loss = None                 # a device tensor: read (a synchronisation) only every LOG_EVERY iterations
    dec.train()
    try:
        if cfg.prefetch:
            batches["prefetcher"] = Prefetcher(source, cfg.prefetch, dev)
        while it < min(cfg.iterations, stop_at) and not stop["now"]:
            if it - loop["start_it"] == 10:
                loop["t10"] = time.time()
                if cfg.profile:
                    acts = [torch.profiler.ProfilerActivity.CPU]
                    if dev.type == "cuda":
                        acts.append(torch.profiler.ProfilerActivity.CUDA)
                    prof["p"], prof["at"] = torch.profiler.profile(activities=acts), (it, time.time())
                    prof["made"] = len(source.seconds)
                    prof["p"].start()
            if cfg.max_minutes and time.time() - loop["t0"] > cfg.max_minutes * 60:
                log.info("--max-minutes %.1f reached at iteration %d", cfg.max_minutes, it)
                break
            for g in opt.param_groups:
                g["lr"] = g.get("lr_mult", 1.0) * lr_at(cfg, it, time.time() - loop["t0"], it - loop["start_it"])
            with phase("step.batch"):        # with --prefetch: the wait for the thread's next batch
                b = batches["prefetcher"].get() if batches["prefetcher"] is not None else source.make()
            batches["rng_state"] = b.rng_state
            n_plain, n_mix, targets, f_plain, f_mix = b.n_plain, b.n_mix, b.targets, b.f_plain, b.f_mix
            y = None
            zero = torch.zeros((), device=dev)
            p_loss, f_loss, tv = zero, zero, zero
            # the feature loss needs a backward pass through the encoder: by default only for the
            # mixed samples, which have no target image; plain samples have the (cheaper) pixel loss
            # the losses in FP32 whatever the forward passes ran in (--amp: bfloat16 autocast)
            with phase("step.forward+loss"):
                if n_plain:
                    with amp():
                        y = dec(f_plain, out_size=(cfg.crop, cfg.crop))
                        fy = enc(y) if cfg.feat_on_plain else None
                    y = y.float()
                    p_loss = F.mse_loss(y, targets)
                    if cfg.lowres_weight:
                        p_loss = p_loss + cfg.lowres_weight * lowres_loss(y, targets)
                    tv = tv + _tv(y) * n_plain / cfg.batch
                    if cfg.feat_on_plain:
                        f_loss = f_loss + ((fy.float() - f_plain.float()) / scale).pow(2).mean() * n_plain
                if n_mix:
                    with amp():
                        ym = dec(f_mix, out_size=(mix_crop, mix_crop))
                        fym = enc(ym)
                    ym = ym.float()
                    tv = tv + _tv(ym) * n_mix / cfg.batch
                    f_loss = f_loss + ((fym.float() - f_mix.float()) / scale).pow(2).mean() * n_mix
                n_feat = n_mix + (n_plain if cfg.feat_on_plain else 0)
                if n_feat:
                    f_loss = f_loss / n_feat           # the mean over the samples that have the feature loss
                loss = cfg.feat_weight * f_loss + cfg.pixel_weight * p_loss + cfg.tv_weight * tv
            opt.zero_grad(set_to_none=True)
            with phase("step.backward"):
                loss.backward()
            with phase("step.adam"):
                opt.step()
            it += 1
            if avg is not None:
                with phase("step.ema"):
                    ema_update(avg, dec, ema_decay(cfg, ema_n))
                ema_n += 1
            if cfg.revive_every and it % cfg.revive_every == 0:
                revived = revive_in_training(dec, opt, enc, sp, ss, cfg.seed * 1_000_003 + it, dev)
                if avg is not None and any(revived):
                    copy_revived(avg, dec, revived)
                if any(revived):
                    bar.write(f"iteration {it}: revived {[len(r) for r in revived]} dead channels per hidden conv")
            lv = loss.detach()
            run_loss = lv if run_loss is None else run_loss.mul(0.98).add_(lv, alpha=0.02)
            if it % LOG_EVERY == 0:
                with phase("step.log"):
                    bar.set_postfix(loss=f"{float(run_loss):.4g}", feat=f"{float(f_loss.detach()):.3g}",
                                    pix=f"{float(p_loss.detach()):.3g}", lr=f"{lr_at(cfg, it, time.time() - loop['t0']):.1e}")
            bar.update(1)
            if prof["p"] is not None and it - prof["at"][0] >= cfg.profile:
                end_profile()
            if cfg.grid_every and it % cfg.grid_every == 0 and n_plain:
                save_grid(run / f"samples_{it:07d}.png", targets, y.detach())
            if eval_imgs and (cfg.eval_every and it % cfg.eval_every == 0 or it == cfg.iterations):
                dec.eval()
                p = eval_holdout(enc, shipped, eval_imgs, dev)
                raw = eval_holdout(enc, dec, eval_imgs, dev) if avg is not None else None
                dec.train()
                history.append({"it": it, "psnr": p, "loss": float(run_loss) if run_loss is not None else None,
                                "time": time.time(),
                                **({"psnr_raw": raw} if avg is not None else {})})
                with open(run / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(history[-1]) + "\n")
                bar.write(f"iteration {it}: held-out PSNR {p:.2f} dB ({len(eval_imgs)} portraits, <=256 px"
                          + (f"; averaged weights, the last iterate's {raw:.2f})" if avg is not None else ")"))
            if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
    except KeyboardInterrupt:
        log.warning("interrupted: saving a checkpoint")
        interrupted = True
    finally:
        if batches["prefetcher"] is not None:
            batches["prefetcher"].close()
        bar.close()
        if prof["p"] is not None:            # the run ended inside the profiled iterations: what there is
            end_profile()
        dec.eval()
        checkpoint()
    if it < cfg.iterations:
        log.info("stopped at iteration %d of %d; `--resume --run-dir %s` continues the run", it, cfg.iterations, run)
    if interrupted:
        raise KeyboardInterrupt
    return out


# the shipped decoders' shape beyond width 0.5 (extra convolutions, their dilations): a fresh run's default
SHIPPED_SHAPE = {"relu3_1": (4, "1,1,4,4"), "relu4_1": (0, "")}
# how to run, not what to train: --resume takes these from the command line only, the rest from the checkpoint
# (cache_crops too: a machine's choice of disk for speed -- a relu4_1 cache of 4,000 crops is ~4 GB)
RUN_OPTIONS = {"layer", "out", "run_dir", "stop_after", "max_minutes", "threads", "device",
               "checkpoint_minutes", "grid_every", "eval_every", "warmup", "amp", "channels_last",
               "cudnn_benchmark", "wct_on_cpu", "prefetch", "profile", "cache_crops"}
# recipe options whose default is not "off" but which a checkpoint from before they existed ran without
OFF_WHEN_ABSENT = {"ema": 0.0}

EPILOG = """\
examples:
  retrain the default relu3_1 decoder on your own images (the shipped decoders' shape), 4 hours at most:
    python -m training.train_decoder --photos MY_PHOTOS --paintings MY_PAINTINGS --max-minutes 240
  continue it later (the run's recipe comes from its checkpoint; options given now override it):
    python -m training.train_decoder --resume --max-minutes 240
  use the result:
    stylecam --decoder runs/decoder_relu3_1/decoder_relu3_1.pt ...

The default schedule (20,000 iterations of batch 4 at 128 px) takes many hours on a CPU (seconds an
iteration on 2 cores): stop with --max-minutes or Ctrl-C (both
save a checkpoint) and --resume later. A GPU (--device cuda) is tens of times faster. Checkpoints, the
log and sample grids go to --run-dir; the decoder is written at every checkpoint. weights/README.md has
the recipes of the shipped decoders."""


def parse_args(argv=None) -> tuple[TrainConfig, bool]:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m training.train_decoder",
                                description="Train a stylecam decoder (feature inverter) for one VGG layer.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", default=d.layer, choices=["relu3_1", "relu4_1"],
                   help="the encoder layer whose features the decoder turns back into an image (default %(default)s)")
    p.add_argument("--photos", default=d.photos, metavar="DIR",
                   help="folder of photos, searched recursively (default: the project's training photos, "
                        "../shared/data/train/photos beside the project)")
    p.add_argument("--paintings", default=d.paintings, metavar="DIR",
                   help="folder of paintings (default: ../shared/data/train/paintings beside the project)")
    p.add_argument("--out", default="", metavar="FILE", help="decoder file to write at every checkpoint (default: "
                                             "RUN/decoder_LAYER.pt; never a shipped decoder in weights/)")
    p.add_argument("--run-dir", default="", metavar="RUN", help="checkpoints, logs, sample grids (default: runs/decoder_LAYER)")
    p.add_argument("--holdout-dir", default="", metavar="DIR",
                   help="held-out portraits whose PSNR is reported during training: the project's "
                        "(training/holdout.txt's names, kept out of training) where found in this folder, else "
                        "its first 8 images (default: the project's held-out portraits in the photos folder; "
                        "none there, nothing is measured)")
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--encoder-weights", default=None, metavar="FILE", help="torchvision VGG16/19 file instead of HED's VGG16")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN/checkpoint.pt: its weights, optimizer, RNG, iteration and "
                        "recipe (any option given now overrides the recipe)")
    p.add_argument("--lr-by-time", action=argparse.BooleanOptionalAction, default=False,
                   help="with --max-minutes: the learning-rate schedule (constant, then cosine) follows this "
                        "run's wall time instead of the iteration count")
    p.add_argument("--feat-on-plain", action=argparse.BooleanOptionalAction, default=False,
                   help="also apply the feature loss to plain samples (default: pixel loss only for them)")
    p.add_argument("--centre-input", action=argparse.BooleanOptionalAction, default=False,
                   help="a fresh decoder subtracts each input channel's mean (measured on 32 crops) before its "
                        "scale: centred inputs (LeCun et al. 1998); an experiment against dying first-stage "
                        "channels, not the shipped decoders' recipe (weights/README.md)")
    p.add_argument("--extra-convs", type=int, default=None, metavar="N",
                   help="N more 3x3 convolutions right after the first, at the features' resolution (more depth "
                        "and context for regional tone, little cost; training.deepen adds them to a trained "
                        "decoder; default: the shipped decoder's, 4 for relu3_1 (dilations 1,1,4,4), 0 for relu4_1)")
    p.add_argument("--extra-dilations", default=d.extra_dilations, metavar="D,D,...",
                   help="the extra convolutions' dilations, one each, e.g. 1,1,2,2 (default: all 1); a dilated one "
                        "sees 2*D feature cells further for the same cost (training.deepen --dilation)")
    p.add_argument("--amp", action="store_true",
                   help="run the forward passes under bfloat16 autocast (weights, optimizer and losses stay "
                        "FP32); meant for CUDA (on an H100, 1.04x as fast as FP32 at batch 16, 256 px)")
    p.add_argument("--channels-last", action="store_true",
                   help="keep the encoder, the decoder and every batch in channels_last memory format (the same "
                        "maths; on CUDA, tensor-core convolutions want that layout; benchmarks/train_speed.py "
                        "--recipe gpu measures it)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its algorithms for each new input shape (CUDA only)")
    p.add_argument("--prefetch", type=int, default=d.prefetch, metavar="N",
                   help="draw, encode and mix each iteration's samples in a thread (on CUDA, on a stream of its "
                        "own) up to N batches ahead of the loop, so that work overlaps the training step; the "
                        "same batches as without it (default 0 = in the loop)")
    p.add_argument("--wct-on-cpu", action="store_true",
                   help="on CUDA, compute the mixed samples' whitening-colouring (two C x C eigendecompositions "
                        "each) on the host CPU: the same maths, which a GPU's solver does slowly at this size")
    p.add_argument("--profile", type=int, default=d.profile, metavar="N",
                   help="profile N iterations after this run's first 10 with torch.profiler and write the named "
                        "phases and the costliest operators to RUN/profile.txt (default 0 = off)")
    p.add_argument("--warmup", type=int, default=d.warmup, metavar="N",
                   help="ramp the rate up over this run's first N iterations (for a fresh optimizer state, e.g. "
                        "after training.widen; default 0)")
    p.add_argument("--revive-every", type=int, default=d.revive_every, metavar="N",
                   help="every N iterations, give channels that are zero on every pixel of 64 fresh crops new "
                        "weights, output unchanged (training/revive.py; default 0 = never)")
    p.add_argument("--first-lr-mult", type=float, default=d.first_lr_mult, metavar="M",
                   help="train the decoder's first convolution at M x the rate (default 1): its channels, with the "
                        "largest fan-in, are the ones that die (param_groups; weights/README.md)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="D",
                   help="keep an exponential moving average of the weights (decay D, e.g. 0.999, ramped up as "
                        "min(D, (1+n)/(10+n))) and export and evaluate it instead of the last iterate (default "
                        "%(default)s; 0 = off: the last iterate; weights/README.md)")
    # the plainer options, named as in TrainConfig
    plain = {
        "iterations": (int, "N", "the schedule's length in iterations (the rate holds for the first half, then falls to --lr-final)"),
        "batch": (int, "N", "samples per iteration"),
        "crop": (int, "PX", "side of the square training crops"),
        "mix_crop": (int, "PX", "side of the crops that mixed samples are made from (0 = --crop)"),
        "cache_crops": (int, "N", "compute N plain crops' features once and keep them (FP16) in RUN (0 = live)"),
        "load_side": (int, "PX", "images are loaded with their shorter side at this size before cropping"),
        "seed": (int, "N", "random seed (crops, pairs, mixes, initial weights)"),
        "stop_after": (int, "N", "stop with a checkpoint after N iterations of this run (0 = never)"),
        "threads": (int, "N", "CPU threads for torch (0 = torch's default)"),
        "grid_every": (int, "N", "save a grid of sample reconstructions to RUN every N iterations (0 = never)"),
        "eval_every": (int, "N", "score 8 held-out portraits (PSNR, <= 256 px) every N iterations, into "
                                 "RUN/log.jsonl (0 = at the schedule's end only)"),
        "scale_min": (float, "S", "smallest random rescale (output px per loaded px) before cropping"),
        "scale_max": (float, "S", "largest random rescale (output px per loaded px) before cropping"),
        "width": (float, "W", "decoder width relative to the encoder's mirror (0.5 = half the channels)"),
        "lr": (float, "R", "Adam's learning rate at the start of the schedule"),
        "lr_final": (float, "R", "the rate at the schedule's end (cosine from --lr over its second half)"),
        "pixel_weight": (float, "W", "weight of the pixel MSE on plain (unmixed) samples"),
        "feat_weight": (float, "W", "weight of the feature reconstruction loss |f(g(F)) - F|^2 (paper 3.2)"),
        "tv_weight": (float, "W", "weight of the total-variation loss on the output"),
        "mix_prob": (float, "P", "chance that a sample's features are mixed from a (photo, painting) pair"),
        "checkpoint_minutes": (float, "M", "write RUN/checkpoint.pt (atomically) every M minutes"),
        "max_minutes": (float, "M", "stop with a checkpoint after M minutes of this run (0 = never)"),
    }
    for f, (kind, metavar, text) in plain.items():
        # "... (0 = never)" -> "... (0 = never; default 0)": one parenthesis, not two
        text = text[:-1] + "; default %(default)s)" if text.endswith(")") else text + " (default %(default)s)"
        p.add_argument("--" + f.replace("_", "-"), type=kind, default=getattr(d, f), metavar=metavar, help=text)
    p.add_argument("--smooth", type=float, default=d.smooth, metavar="P",
                   help="blur this share of the plain training crops (Gaussian, sigma 1-8 px, log-uniform) so "
                        "the decoder learns large smooth regions too (default 0; weights/README.md)")
    p.add_argument("--lowres-weight", type=float, default=d.lowres_weight, metavar="W",
                   help="add W x the MSE between 4x4 block averages of output and photo to the pixel loss: "
                        "regional tone weighted above fine detail (default 0; weights/README.md)")
    a = p.parse_args(argv)
    if a.resume:
        inherit_recipe(p, a, argv)
    elif a.extra_convs is None:                      # a fresh run: the shipped decoder's shape for the layer
        a.extra_convs, shipped_dilations = SHIPPED_SHAPE[a.layer]
        a.extra_dilations = a.extra_dilations or shipped_dilations
    try:
        if torch.device(a.device).type not in ("cpu", "cuda"):
            raise RuntimeError
    except RuntimeError:
        p.error(f"--device takes cpu, cuda or cuda:N, got {a.device!r}")
    # each number option's range (a zero batch or a negative rate would fail later, or silently train nothing)
    at_least = {"iterations": 1, "batch": 1, "crop": 16, "mix_crop": 0, "cache_crops": 0, "load_side": 16,
                "threads": 0, "grid_every": 0, "eval_every": 0, "stop_after": 0, "prefetch": 0, "profile": 0,
                "warmup": 0, "revive_every": 0, "lr_final": 0, "pixel_weight": 0, "feat_weight": 0,
                "tv_weight": 0, "max_minutes": 0, "first_lr_mult": 0, "lowres_weight": 0, "ema": 0, "smooth": 0,
                "mix_prob": 0}
    for k, lo in at_least.items():
        if getattr(a, k) < lo:
            p.error(f"--{k.replace('_', '-')} must be at least {lo}, got {getattr(a, k)}")
    for k in ("scale_min", "width", "lr", "checkpoint_minutes"):
        if not getattr(a, k) > 0:
            p.error(f"--{k.replace('_', '-')} must be above 0, got {getattr(a, k)}")
    for k, hi in (("mix_prob", 1), ("smooth", 1)):
        if getattr(a, k) > hi:
            p.error(f"--{k.replace('_', '-')} is a share: at most {hi}, got {getattr(a, k)}")
    if a.ema >= 1:
        p.error(f"--ema is a decay below 1 (e.g. 0.999; 0 = off), got {a.ema}")
    if a.scale_min > a.scale_max:
        p.error(f"--scale-min {a.scale_min} is above --scale-max {a.scale_max}")
    if a.extra_convs < 0:
        p.error(f"--extra-convs must be >= 0, got {a.extra_convs}")
    if a.extra_dilations:
        try:
            dil = [int(x) for x in a.extra_dilations.split(",")]
        except ValueError:
            p.error(f"--extra-dilations takes whole numbers separated by commas, got {a.extra_dilations!r}")
        if len(dil) != a.extra_convs or min(dil) < 1:
            p.error(f"--extra-dilations needs {a.extra_convs} numbers >= 1 (one per --extra-convs), "
                    f"got {a.extra_dilations!r}")
        a.extra_dilations = dilations_spec(dil)
    resume = a.resume
    kw = {k: v for k, v in vars(a).items() if k != "resume"}
    return TrainConfig(**kw), resume


def inherit_recipe(p: argparse.ArgumentParser, a: argparse.Namespace, argv) -> None:
    """--resume: the run's recipe (every option but RUN_OPTIONS) from its checkpoint, except the options the
    command line gives; a missing or unreadable checkpoint, or a schedule already done, is an error."""
    from realtime.argtools import explicit_options
    ckpt = run_folder(a) / "checkpoint.pt"
    if not ckpt.exists():
        p.error(f"--resume: no checkpoint at {ckpt} (--run-dir names the run's folder)")
    ck = read_checkpoint_or_exit(p, ckpt)
    given = explicit_options(p, argv)
    fields = set(TrainConfig.__dataclass_fields__) - RUN_OPTIONS
    inherited = {}
    for k in sorted(fields - given):
        v = ck["config"].get(k)
        if v is None:                                # absent from an older checkpoint
            if k not in OFF_WHEN_ABSENT:
                continue                             # today's default: what it ran with
            v = OFF_WHEN_ABSENT[k]
        if getattr(a, k) != v and not (k == "extra_convs" and a.extra_convs is None and v == 0):
            inherited[k] = v
        setattr(a, k, v)
    if a.extra_convs is None:                        # a checkpoint from before extra convolutions existed
        a.extra_convs = 0
    if ck["iteration"] >= a.iterations:
        p.error(f"--resume: {ckpt} is at iteration {ck['iteration']}, the end of its schedule (--iterations "
                f"{a.iterations}): give a larger --iterations to train on")
    shown = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(inherited.items())
                      if k not in ("photos", "paintings"))
    if shown:
        log.info("the run's recipe from %s: %s", ckpt, shown)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg, resume = parse_args(argv)
        run = run_folder(cfg)
        if not resume and (run / "checkpoint.pt").exists():
            raise ValueError(f"{run} holds a run already: --resume continues it; to start afresh, give "
                             "another --run-dir (or delete that folder)")
        out = train(cfg, resume)
    except (FileNotFoundError, ValueError) as e:
        print(f"python -m training.train_decoder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m training.train_decoder: interrupted", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
