"""Deepen a trained decoder without changing what it computes: N more 3x3 convolutions (+ ReLU) right
after its first one, at the features' own resolution (``Decoder(extra=N)``).

Net2DeeperNet (Chen, Goodfellow & Shlens 2016, "Net2Net: accelerating learning via knowledge
transfer"): each new convolution starts as the identity (the centre tap 1 on its own channel, every
other weight and the bias 0).  Its input comes out of a ReLU, so it is never negative, and the ReLU
after the new convolution passes it through unchanged: the deeper network's output equals the
shallower one's exactly, and training then moves the new layers away from the identity.  Why there:
the decoders' error is mostly regional tone, patches a few feature cells across (weights/README.md),
and a convolution at the features' resolution widens what each output pixel sees by two feature
cells at a sixteenth of the cost of a full-resolution one (relu3_1).

    python -m training.deepen --from runs/half/checkpoint.pt --out runs/deep/checkpoint.pt [--add 2] [--dilation 1]

``--dilation D`` makes the added convolutions dilated (Yu & Koltun 2016): each then widens the view by
2*D feature cells instead of 2, for the same cost, and starts as the same identity (the centre tap).

The result is a training checkpoint (no optimizer state and no weight average: neither fits the new
parameters; the iteration count kept) that ``python -m training.train_decoder --resume --run-dir
runs/deep --extra-convs N [--extra-dilations ...] ...`` (the flags it prints) continues (``--warmup``
ramps the fresh Adam's rate up).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.decoder import Decoder  # noqa: E402
from training.train_decoder import (decoder_of_checkpoint_or_exit, dilations_spec,  # noqa: E402
                                    read_checkpoint_or_exit, same_output_or_exit, write_reshaped_checkpoint)


def deepen_decoder(dec: Decoder, add: int = 2, dilation: int = 1) -> Decoder:
    """A decoder with ``add`` more identity-initialised convolutions (of that dilation) after the first and
    any extra ones it has, computing the same function."""
    if add < 1:
        raise ValueError(f"--add must be at least 1, got {add}")
    if dilation < 1:
        raise ValueError(f"--dilation must be at least 1, got {dilation}")
    deep = Decoder(dec.layer, dec.arch, dec.width, centre=dec.centre, extra=dec.extra + add,
                   dilations=dec.dilations + (dilation,) * add)
    deep.feat_scale.copy_(dec.feat_scale)
    if dec.centre:
        deep.feat_mean.copy_(dec.feat_mean)
    old = [m for m in dec.net if isinstance(m, nn.Conv2d)]
    new = [m for m in deep.net if isinstance(m, nn.Conv2d)]
    # the first convolution, then the old extra ones, keep their places; the added ones come right after
    # them (before the first upsampling); every later convolution shifts by ``add``
    keep = 1 + dec.extra
    pairs = list(zip(old[:keep], new[:keep])) + list(zip(old[keep:], new[keep + add:]))
    with torch.no_grad():
        for a, b in pairs:
            if a.weight.shape != b.weight.shape:
                raise ValueError(f"convolution shapes differ: {tuple(a.weight.shape)} -> {tuple(b.weight.shape)}")
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        for conv in new[keep:keep + add]:
            c = conv.out_channels
            conv.weight.zero_()
            conv.weight[torch.arange(c), torch.arange(c), 1, 1] = 1.0
            conv.bias.zero_()
    return deep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src", required=True, help="training checkpoint (runs/.../checkpoint.pt)")
    p.add_argument("--out", required=True, help="the deepened training checkpoint to write")
    p.add_argument("--add", type=int, default=2, help="convolutions to add (default 2)")
    p.add_argument("--dilation", type=int, default=1,
                   help="the added convolutions' dilation (default 1; 2 or 4 see further at the same cost: "
                        "Yu & Koltun 2016)")
    a = p.parse_args(argv)
    if a.add < 1:
        p.error("--add must be at least 1")
    if a.dilation < 1:
        p.error("--dilation must be at least 1")
    src = Path(a.src)
    ck = read_checkpoint_or_exit(p, src)
    cfg = dict(ck["config"])
    dec = decoder_of_checkpoint_or_exit(p, ck, src)
    deep = deepen_decoder(dec, a.add, a.dilation)
    diff = same_output_or_exit(dec, deep, 1e-5, "deepening")
    cfg["extra_convs"] = deep.extra
    cfg["extra_dilations"] = dilations_spec(deep.dilations)
    flags = f"--extra-convs {deep.extra}"
    if cfg["extra_dilations"]:
        flags += f" --extra-dilations {cfg['extra_dilations']}"
    write_reshaped_checkpoint(ck, cfg, deep, a.out, deepened_from=f"{src} ({dec.extra} extra convolutions, +{a.add}"
                              + (f" of dilation {a.dilation})" if a.dilation != 1 else ")"))
    n_old, n_new = (sum(x.numel() for x in m.parameters()) for m in (dec, deep))
    print(f"{src} ({dec.extra} extra convolutions, {n_old:,} parameters) -> {a.out} ({deep.extra}, {n_new:,} "
          f"parameters); same output to {diff:.1e}; resume with {flags}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
