"""Find a decoder's dormant channels and give them fresh weights without changing what it computes.

A ReLU channel whose pre-activation is negative on every input passes no gradient to its incoming
weights, so once it is dead, training never brings it back.  Measured in session 10 on the shipped
relu3_1 decoders (``benchmarks/dormant.py --holdout``): of the first convolution's channels (256
features -> the 1/4-resolution stage, where everything the image needs passes), 67 of 128 in the
full-width decoder and 40 of 64 in the half-width one are (almost) never active on the held-out
portraits (the full-width one was widened from the half-width one and copied its dead channels);
the relu4_1 decoder's first convolution has 116 of 128.  They died in the first CPU session's
training (5,600 iterations at a rate of 1e-3 already had 37 of 64).

The remedy follows ReDo (Sokar, Agarwal, Castro & Evci 2023, "The dormant neuron phenomenon in deep
reinforcement learning"): a channel is dormant when its mean absolute activation, divided by the
mean over its layer's channels, is at most ``tau`` (default 1e-3: the same channels, give or take a few, as exactly zero); its incoming filter and bias are drawn afresh
(PyTorch's default convolution initialisation), and its outgoing weights in the next convolution
are set to zero, so the decoder's output does not change; its bias is then shifted so that its mean
pre-activation over the measured photos is zero (a fresh filter on non-negative inputs can come
back dead otherwise).  Training then grows the outgoing weights
(their gradient is the revived channel's activation, now non-zero) and the incoming ones after them.

    python -m training.revive --from runs/decoder_relu3_1/checkpoint.pt \\
        --out runs/revived_relu3_1/checkpoint.pt [--tau 0.01] [--images 32]

The result is a training checkpoint without optimizer state (the old Adam moments belong to the
old weights); ``python -m training.train_decoder --resume --run-dir runs/revived_relu3_1
--warmup 500 ...`` continues it with a fresh Adam.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.decoder import Decoder  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights  # noqa: E402
from realtime.images import bgr_to_tensor  # noqa: E402
from training.data import DEFAULT_DATA, holdout_names, iter_folder  # noqa: E402


def _convs(dec: Decoder) -> list[nn.Conv2d]:
    return [m for m in dec.net if isinstance(m, nn.Conv2d)]


def _hooked_means(dec: Decoder, modules: list[nn.Module], feats, stat) -> list[torch.Tensor | None]:
    """Run ``dec`` over ``feats`` with a hook on each of ``modules``; for each, the mean over the samples
    of ``stat(k, output)`` (a per-channel vector), or None without samples or when never called."""
    sums: list[torch.Tensor | None] = [None] * len(modules)
    count = 0

    def hook(k):
        def f(_m, _i, out):
            v = stat(k, out.detach()).double().cpu() * out.shape[0]
            sums[k] = v if sums[k] is None else sums[k] + v
        return f

    handles = [m.register_forward_hook(hook(k)) for k, m in enumerate(modules)]
    try:
        for feat in feats:
            dec(feat)
            count += feat.shape[0]
    finally:
        for h in handles:
            h.remove()
    return [None if s is None or not count else s / count for s in sums]


@torch.no_grad()
def channel_scores(dec: Decoder, feats) -> list[torch.Tensor]:
    """For each hidden convolution (every one but the last), each channel's mean absolute activation
    after its ReLU over ``feats`` (an iterable of N x C x h x w feature tensors), divided by the mean
    over the layer's channels (ReDo's score; 0 = never active)."""
    convs = _convs(dec)
    relus = [m for m in dec.net if isinstance(m, nn.ReLU)]
    if len(relus) != len(convs) - 1:
        raise ValueError(f"expected one ReLU after each hidden convolution, found {len(relus)} for {len(convs)}")
    means = _hooked_means(dec, relus, feats, lambda _k, out: out.abs().mean(dim=(0, 2, 3)))
    if any(m is None for m in means):
        raise ValueError("no features to score the channels on")
    return [(m / m.mean().clamp_min(1e-30)).float() for m in means]


@torch.no_grad()
def revive_dormant(dec: Decoder, scores: list[torch.Tensor], feats=(), tau: float = 1e-3,
                   seed: int = 0) -> list[list[int]]:
    """Re-initialise, in place, every hidden channel whose score is at most ``tau`` and zero its outgoing
    weights (the output stays the same).  With ``feats`` (feature tensors, as for channel_scores), each
    revived channel's bias is then shifted so that its mean pre-activation over them is zero: a fresh
    filter on non-negative inputs can otherwise come back dead (a data-dependent initialisation, after
    Kraehenbuehl et al. 2016).  Returns the revived channels of each hidden convolution."""
    convs = _convs(dec)
    if len(scores) != len(convs) - 1:
        raise ValueError(f"{len(scores)} score vectors for {len(convs) - 1} hidden convolutions")
    g = torch.Generator().manual_seed(seed)
    revived = []
    for conv, nxt, s in zip(convs[:-1], convs[1:], scores):
        idx = torch.nonzero(s <= tau).flatten()
        revived.append(idx.tolist())
        if idx.numel() == 0:
            continue
        # PyTorch's own Conv2d initialisation (kaiming uniform, a = sqrt(5); bias uniform +-1/sqrt(fan_in)),
        # drawn from our generator so that the result is reproducible
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = 1.0 / fan_in ** 0.5                          # = gain(a=sqrt 5) * sqrt(3 / fan_in)
        w = (torch.rand((idx.numel(), *conv.weight.shape[1:]), generator=g) * 2 - 1) * bound
        b = (torch.rand(idx.numel(), generator=g) * 2 - 1) * bound
        conv.weight[idx] = w.to(conv.weight)
        conv.bias[idx] = b.to(conv.bias)
        nxt.weight[:, idx] = 0
    # a revived channel feeds nothing (its outgoing weights are zero), so the pre-activations of all
    # of them can be measured in one pass and centred independently
    centre = [k for k, idx in enumerate(revived) if idx]
    means = _hooked_means(dec, [convs[k] for k in centre], feats,
                          lambda j, out: out[:, revived[centre[j]]].mean(dim=(0, 2, 3)))
    for k, m in zip(centre, means):
        if m is not None:
            convs[k].bias[revived[k]] -= m.to(convs[k].bias)
    return revived


def photo_features(enc, photos: str | Path, n: int, short_side: int = 256, seed: int = 0, device="cpu"):
    """Features of ``n`` training photos picked at random (the held-out portraits excluded), one at a time."""
    files = list(iter_folder(photos, short_side, holdout_names(), desc="photos"))
    if not files:
        raise ValueError(f"no readable photos in {photos}")
    random.Random(seed).shuffle(files)
    for _p, img in files[:n]:
        yield enc(bgr_to_tensor(img, device))


def main(argv=None) -> int:
    from training.train_decoder import decoder_from_checkpoint, read_checkpoint_or_exit, write_reshaped_checkpoint
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src", required=True, help="training checkpoint (runs/.../checkpoint.pt)")
    p.add_argument("--out", required=True, help="the training checkpoint to write")
    p.add_argument("--photos", default=str(DEFAULT_DATA / "photos"),
                   help="photos to measure the activations on (default: the training photos)")
    p.add_argument("--images", type=int, default=32, help="how many photos (default 32, short side 256 px)")
    p.add_argument("--tau", type=float, default=1e-3,
                   help="dormant when a channel's mean |activation| / its layer's mean is at most this (default "
                        "1e-3; 0 = exactly zero on every pixel of the photos)")
    p.add_argument("--encoder-weights", default=None, help="torchvision VGG file the decoder was trained for")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src = Path(a.src)
    ck = read_checkpoint_or_exit(p, src)
    if a.images < 1:
        p.error("--images must be at least 1")
    cfg = dict(ck["config"])
    ew = load_encoder_weights(a.encoder_weights or cfg.get("encoder_weights"))
    try:
        dec = decoder_from_checkpoint(ck, ew.arch)
    except RuntimeError as e:
        p.error(f"{src}: its model is not a {ew.arch} decoder of layer {cfg['layer']}, width {cfg['width']}: {e}")
    dec.eval()
    enc = build_encoder(cfg["layer"], ew)
    try:
        with torch.no_grad():
            feats = [f for f in photo_features(enc, a.photos, a.images, seed=a.seed)]
            before = [dec(f) for f in feats[:2]]
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    scores = channel_scores(dec, feats)
    revived = revive_dormant(dec, scores, feats, a.tau, a.seed)
    with torch.no_grad():
        diffs = [(dec(f) - b).abs() for f, b in zip(feats[:2], before)]
    diff, mean_diff = max(float(d.max()) for d in diffs), max(float(d.mean()) for d in diffs)
    # a channel under tau but not exactly zero contributed a little: the output may move by that much
    if mean_diff > 1e-3:
        raise SystemExit(f"reviving changed the output by {mean_diff:.2e} on average (max {diff:.2e}): refusing "
                         f"to write it; try a smaller --tau")
    write_reshaped_checkpoint(ck, cfg, dec, a.out,
                              revived={"from": str(src), "tau": a.tau, "images": len(feats), "channels": revived})
    convs = _convs(dec)
    for k, idx in enumerate(revived):
        print(f"conv {k} ({convs[k].in_channels} -> {convs[k].out_channels}): {len(idx)} dormant channels revived")
    print(f"{src} -> {a.out} ({len(feats)} photos, tau {a.tau}); output changed by {mean_diff:.1e} on average "
          f"(max {diff:.1e}); "
          f"continue with train_decoder --resume --warmup 500")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
