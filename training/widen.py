"""Widen a trained decoder without changing what it computes, so that a wider one can continue
from it instead of starting over.

Net2WiderNet (Chen, Goodfellow & Shlens 2016, "Net2Net: accelerating learning via knowledge
transfer"): every hidden channel of the narrow decoder is copied ``factor`` times (its filter and
bias repeated), and the next convolution's weights on the copies are divided among them.  With
ReLU between the convolutions the wide network's output equals the narrow one's.  To break the
symmetry of the copies, the next layer's shares are perturbed by noise that sums to zero over each
group of copies, which keeps the output exactly the same; the copies then receive different
gradients and drift apart in training.

    python -m training.widen --from runs/half/checkpoint.pt \\
        --out runs/wide_relu3_1/checkpoint.pt [--factor 2]

The result is a training checkpoint (no optimizer state, the iteration count kept) that
``python -m training.train_decoder --resume --run-dir runs/wide_relu3_1 --width 1.0 ...`` continues.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.decoder import Decoder  # noqa: E402
from training.train_decoder import (decoder_of_checkpoint_or_exit, read_checkpoint_or_exit,  # noqa: E402
                                    same_output_or_exit, write_reshaped_checkpoint)


def widen_decoder(narrow: Decoder, factor: int = 2, noise: float = 0.01, seed: int = 0) -> Decoder:
    """A decoder ``factor`` times as wide (in the stages ``width`` scales) computing the same function."""
    if factor < 2:
        raise ValueError(f"widening factor must be at least 2, got {factor}")
    wide = Decoder(narrow.layer, narrow.arch, narrow.width * factor, centre=narrow.centre, extra=narrow.extra,
                   dilations=narrow.dilations)
    wide.feat_scale.copy_(narrow.feat_scale)
    if narrow.centre:
        wide.feat_mean.copy_(narrow.feat_mean)
    n_convs = [m for m in narrow.net if isinstance(m, nn.Conv2d)]
    w_convs = [m for m in wide.net if isinstance(m, nn.Conv2d)]
    g = torch.Generator().manual_seed(seed)
    # for each conv: which narrow channel each wide channel copies (input side and output side)
    in_map = torch.arange(n_convs[0].in_channels)           # the features: not widened
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(n_convs, w_convs)):
            if b.in_channels != len(in_map):
                raise ValueError(f"conv {i}: {b.in_channels} inputs in the wide decoder, {len(in_map)} mapped")
            if b.out_channels == a.out_channels:
                out_map = torch.arange(a.out_channels)
            elif b.out_channels == factor * a.out_channels:
                out_map = torch.arange(b.out_channels) % a.out_channels
            else:
                raise ValueError(f"conv {i}: {a.out_channels} -> {b.out_channels} channels is not a widening "
                                 f"by {factor}")
            counts = torch.bincount(in_map, minlength=a.in_channels).float()        # copies of each input
            w = a.weight[out_map][:, in_map] / counts[in_map][None, :, None, None]
            # zero-sum noise over each group of input copies: the output does not change
            eps = torch.randn(w.shape, generator=g) * noise * w.abs().mean()
            group_mean = torch.zeros(w.shape[0], a.in_channels, *w.shape[2:]).index_add_(1, in_map, eps)
            eps = eps - (group_mean / counts[None, :, None, None])[:, in_map]
            b.weight.copy_(w + eps)
            b.bias.copy_(a.bias[out_map])
            in_map = out_map
    return wide


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src", required=True, help="training checkpoint (runs/.../checkpoint.pt)")
    p.add_argument("--out", required=True, help="the widened training checkpoint to write")
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise, relative (default 0.01)")
    a = p.parse_args(argv)
    src = Path(a.src)
    ck = read_checkpoint_or_exit(p, src)
    cfg = dict(ck["config"])
    narrow = decoder_of_checkpoint_or_exit(p, ck, src)
    wide = widen_decoder(narrow, a.factor, a.noise)
    diff = same_output_or_exit(narrow, wide, 1e-3, "widening")
    cfg["width"] = wide.width
    write_reshaped_checkpoint(ck, cfg, wide, a.out, widened_from=f"{src} (width {narrow.width}, x{a.factor})")
    n_old, n_new = (sum(x.numel() for x in m.parameters()) for m in (narrow, wide))
    print(f"{src} (width {narrow.width}, {n_old:,} parameters) -> {a.out} (width {wide.width}, {n_new:,} "
          f"parameters); same output to {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
