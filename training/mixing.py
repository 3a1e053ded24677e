"""The decoder's mixed training samples (paper §3.2): a photo's features pushed towards a painting's by a
random reconstruction mode at a random strength, clamped at zero as the stylizer clamps them.

``mix_features`` is the reference: one (photo, painting) pair through the live pipeline's own
``realtime.reconstruct.reconstruct`` (one global region).  ``mix_batch`` makes the same mixes for a
batch of pairs -- the same draws from the RNG, in the same order, so the same modes and strengths --
but computes them a mode at a time over all the pairs that drew it, with only the statistics each
mode needs.  On a GPU the reference costs ~250 small operations a pair (validation, covariances
that adain and linear never use, a host-device wait for the style's fallback regions); session 22's
profile of the training step put the mixes at 14 of the 27 ms of host time it took to draw a batch
(docs/results/train_profile_gpu_h200_session22.txt).  tests/test_training.py holds the two to the
same results.
"""
from __future__ import annotations

import random

import torch

from realtime import reconstruct as R

MIX_MODES = ("patchswap", "linear", "adain", "wct")


def draw_mix(rng: random.Random) -> tuple[str, float]:
    """One pair's mode and strength: patchswap at full strength, the others in [0.3, 1]."""
    mode = rng.choice(MIX_MODES)
    strength = 1.0 if mode == "patchswap" else rng.uniform(0.3, 1.0)
    return mode, strength


def mix_features(fp: torch.Tensor, fs: torch.Tensor, rng: random.Random, wct_on_cpu: bool = False) -> torch.Tensor:
    """One (photo, painting) feature pair (1 x C x h x w each) mixed by a random reconstruction mode and
    strength, clamped at zero as the stylizer clamps them before decoding (they stand for ReLU
    features).  ``wct_on_cpu``: a ``wct`` mix of device features is computed on the host CPU and moved
    back (the same maths; its two C x C eigendecompositions in float64 are latency-bound on a GPU;
    --wct-on-cpu).  The reference for ``mix_batch``."""
    mode, strength = draw_mix(rng)
    if wct_on_cpu and mode == "wct" and fp.device.type != "cpu":
        dev = fp.device
        fp, fs = fp.cpu(), fs.cpu()
    else:
        dev = None
    style = R.StyleStats.from_features(fs)
    out = R.reconstruct(fp, None, style, mode=mode, strength=strength, use_kernel=False, floor=0.0)
    return out if dev is None else out.to(dev)


def _stats(f: torch.Tensor) -> R.RegionStats:
    """Per-pair, per-channel mean and biased variance of N x C x P float32 features: the live pipeline's
    formulas (reconstruct.stats_from_sums) with the N pairs in place of its K regions, one region of
    weight 1 everywhere in each."""
    n = torch.full((f.shape[0],), float(f.shape[-1]), dtype=f.dtype, device=f.device)
    return R.stats_from_sums(f.sum(-1), f.pow(2).sum(-1), n)


def _covariance(f: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """N x C x C centred covariances, symmetrised (masked_stats' with_cov, one region)."""
    cov = f @ f.transpose(1, 2) / float(f.shape[-1]) - mean[:, :, None] * mean[:, None, :]
    return 0.5 * (cov + cov.transpose(1, 2))


def _mix_group(mode: str, f: torch.Tensor, s: torch.Tensor, alpha: torch.Tensor, shape_c, shape_s) -> torch.Tensor:
    """The pairs that drew ``mode``: content f and style s (G x C x P float32), strengths alpha (G x 1 x 1)."""
    if mode == "patchswap":
        sw = torch.stack([R.patch_swap(fi.reshape(shape_c), si.reshape(shape_s)).reshape(fi.shape)
                          for fi, si in zip(f, s)])
        return (1 - alpha) * f + alpha * sw
    cs, ss = _stats(f), _stats(s)
    mu_c, mu_s = cs.mean, ss.mean
    if mode == "linear":            # linear_exact: F + alpha (mu_s - mu_c)
        return f + (alpha[:, :, 0] * (mu_s - mu_c))[:, :, None]
    if mode == "adain":             # adain: per channel, std_s / std_c around the means
        a = ss.std / cs.std
        b = mu_s - a * mu_c
        return (1 - alpha) * f + alpha * (a[:, :, None] * f + b[:, :, None])
    # wct: C_s^{1/2} C_c^{-1/2} (f - mu_c) + mu_s, the square roots as reconstruct.wct takes them (batched)
    s_half, _ = R._sqrtm_pair(_covariance(s, mu_s), 1e-5)
    _, c_ihalf = R._sqrtm_pair(_covariance(f, mu_c), 1e-5)
    M = (s_half @ c_ihalf).float()
    t = M @ (f - mu_c[:, :, None]) + mu_s[:, :, None]
    return (1 - alpha) * f + alpha * t


def mix_batch(fp: torch.Tensor, fs: torch.Tensor, rng: random.Random, wct_on_cpu: bool = False) -> torch.Tensor:
    """``mix_features`` on each pair (fp[i], fs[i]) in turn -- the same draws from ``rng`` -- as one
    N x C x h x w batch of fp's dtype, each mode computed once over the pairs that drew it."""
    if fp.dim() != 4 or fs.dim() != 4 or fp.shape[:2] != fs.shape[:2]:
        raise ValueError(f"mix_batch needs N x C x h x w photo and painting features of the same N and C, "
                         f"got {tuple(fp.shape)} and {tuple(fs.shape)}")
    draws = [draw_mix(rng) for _ in range(fp.shape[0])]
    with torch.autocast(fp.device.type, enabled=False):      # float32 maths whatever the caller's autocast
        return _mix_batch(fp, fs, draws, wct_on_cpu)


def _mix_batch(fp, fs, draws, wct_on_cpu):
    N, C = fp.shape[:2]
    f = fp.float().reshape(N, C, -1)
    s = fs.float().reshape(N, C, -1)
    out = torch.empty_like(f)
    for mode in MIX_MODES:
        ids = [i for i, (m, _) in enumerate(draws) if m == mode]
        if not ids:
            continue
        idx = torch.tensor(ids, device=f.device)
        alpha = torch.tensor([draws[i][1] for i in ids], dtype=torch.float32).reshape(-1, 1, 1)
        fi, si = f.index_select(0, idx), s.index_select(0, idx)
        if wct_on_cpu and mode == "wct" and f.device.type != "cpu":
            res = _mix_group(mode, fi.cpu(), si.cpu(), alpha, fp.shape[1:], fs.shape[1:]).to(f.device)
        else:
            res = _mix_group(mode, fi, si, alpha.to(f.device), fp.shape[1:], fs.shape[1:])
        out.index_copy_(0, idx, res)
    out = out.clamp_min(0.0)
    if fp.dtype == torch.float16:
        out = out.clamp(-R.FP16_MAX, R.FP16_MAX)
    return out.to(fp.dtype).reshape(fp.shape)
