"""Is the decoder's last convolution at its optimum?  Its output is linear in its weights (no activation
after it), so for fixed earlier layers the weights that minimise the pixel error over a set of photos
have a closed form: least squares of the photos' pixels on the 3 x 3 neighbourhoods of the last hidden
layer (plus a bias).  This refits them on training photos and scores the refitted decoder held out.

    python benchmarks/last_layer.py [--photos N] [--pixels 8192] [--ridge 0,1e-4,1e-2] [--json out.json]

Training photos: ``--photos`` of the research set's, in a fixed random order, none of the held-out
portraits (training/holdout.txt), each at its own size with the longer side at most ``--max-side`` (as
``benchmarks/autoencoder.py`` reads the held-out ones), ``--pixels`` random pixels of each.  The refit
weights are rounded to FP16, as a shipped decoder stores them, before they are scored.  A refit that
gains held out would be a cheap improvement; one that does not says the reconstruction error lies in
what the hidden layers compute, not in how the last one mixes them.  Nothing is written to weights/.
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.autoencoder import holdout_files, psnr, read_at_most  # noqa: E402
from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from engines.decoder import load_decoder  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights, weights_dir  # noqa: E402
from realtime.images import bgr_to_tensor, tensor_to_bgr  # noqa: E402


def training_photos(folder: Path | None, n: int) -> list[Path]:
    """``n`` photos of ``folder`` (default: the research set's photos less the held-out ones), in a fixed
    random order."""
    from training.data import DEFAULT_DATA, holdout_names, list_images
    hold = holdout_names()
    files = [p for p in list_images(folder or DEFAULT_DATA / "photos") if p.name not in hold]
    random.Random(0).shuffle(files)
    return files[:n]


def weights_of(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The convolution as a (cin * 9 + 1) x cout matrix: unfolded 3 x 3 neighbourhoods, then the bias."""
    return torch.cat([conv.weight.detach().reshape(conv.out_channels, -1), conv.bias.detach()[:, None]], 1).double().T


def conv_of(template: torch.nn.Conv2d, w: torch.Tensor) -> torch.nn.Conv2d:
    """A copy of ``template`` with the weights of matrix ``w`` (weights_of's layout), rounded to FP16."""
    conv = copy.deepcopy(template)
    wt = w.T.float().half().float()
    conv.weight.data = wt[:, :-1].reshape(conv.weight.shape).contiguous()
    conv.bias.data = wt[:, -1].contiguous()
    return conv


@torch.no_grad()
def hidden(enc, dec, img):
    """The photo as a tensor and the decoder's last hidden layer for it (what the last convolution sees)."""
    x = bgr_to_tensor(img)
    return x, dec.net[:-1](dec.normalise_input(enc(x)))


@torch.no_grad()
def normal_equations(enc, dec, files, max_side: int, pixels: int, seed: int = 0):
    """Sums A = X^T X, B = X^T Y and yy = sum Y^2 over ``pixels`` random pixels of each photo (all of them
    where it has fewer), in float64, where a row of X is a pixel's 3 x 3 neighbourhood of the last hidden
    layer (and 1) and a row of Y its colour; and the number of pixels."""
    last = dec.net[-1]
    d = last.in_channels * last.kernel_size[0] * last.kernel_size[1] + 1
    A = torch.zeros(d, d, dtype=torch.float64)
    B = torch.zeros(d, last.out_channels, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    n, yy = 0, 0.0
    for f in files:
        img = read_at_most(f, max_side)
        H, W = img.shape[:2]
        x, h = hidden(enc, dec, img)
        cols = F.unfold(h, last.kernel_size, padding=last.padding)[0]          # cin*9 x h'w'
        hh, ww = h.shape[-2:]
        inside = torch.arange(hh * ww).reshape(hh, ww)[:H, :W].reshape(-1)    # the decoder's output is cropped
        sel = inside[torch.randperm(inside.numel(), generator=g)[:pixels]]
        X = torch.cat([cols[:, sel], torch.ones(1, sel.numel())]).double().T
        Y = x[0].reshape(3, -1)[:, (sel // ww) * W + sel % ww].double().T
        A += X.T @ X
        B += X.T @ Y
        yy += float((Y * Y).sum())
        n += X.shape[0]
    return A, B, yy, n


def refit(A: torch.Tensor, B: torch.Tensor, ridge: float) -> torch.Tensor:
    """The least-squares weights from normal_equations' sums, with a ridge of ``ridge`` times the mean
    diagonal of A (minimum-norm where A is singular: a hidden channel that is zero everywhere)."""
    reg = A + ridge * float(torch.trace(A)) / A.shape[0] * torch.eye(A.shape[0], dtype=A.dtype)
    return torch.linalg.lstsq(reg, B, driver="gelsd").solution


def sampled_mse(A: torch.Tensor, B: torch.Tensor, yy: float, n: int, w: torch.Tensor) -> float:
    """The mean squared error (per colour value, images in [0, 1], unclamped) of weights ``w`` over the
    sampled pixels, from normal_equations' sums: (tr(w^T A w) - 2 tr(w^T B) + yy) / (n x colours)."""
    return (float(torch.trace(w.T @ A @ w) - 2 * torch.trace(w.T @ B)) + yy) / (n * B.shape[1])


@torch.no_grad()
def held_out_psnr(enc, dec, convs, files, max_side: int) -> list[list[float]]:
    """Per last convolution in ``convs``, the PSNR of each held-out photo decoded with it (the encoder and
    the hidden layers run once a photo for all of them)."""
    out = [[] for _ in convs]
    for f in files:
        img = read_at_most(f, max_side)
        _, h = hidden(enc, dec, img)
        for scores, conv in zip(out, convs):
            scores.append(psnr(tensor_to_bgr(conv(h)[..., : img.shape[0], : img.shape[1]]), img))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int_at_least(1), default=300, help="training photos to refit on (default 300)")
    p.add_argument("--photo-dir", default=None, help="folder of training photos (default: the research set's)")
    p.add_argument("--holdout-dir", default=None, help="folder of held-out photos (default: training/holdout.txt's)")
    p.add_argument("--pixels", type=int_at_least(1), default=8192,
                   help="random pixels per training photo (default 8192)")
    p.add_argument("--max-side", type=int_at_least(16), default=512)
    p.add_argument("--ridge", default="0,1e-4,1e-2",
                   help="ridge strengths, relative to the mean diagonal of X^T X, comma-separated")
    p.add_argument("--layer", default="relu3_1", choices=["relu3_1", "relu4_1"])
    p.add_argument("--decoder", default=None, help="decoder file (default: weights/decoder_LAYER.pt)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    try:
        ridges = [float(r) for r in a.ridge.split(",")]
    except ValueError:
        p.error(f"--ridge: numbers separated by commas, got {a.ridge!r}")
    from training.data import list_images
    train = training_photos(Path(a.photo_dir) if a.photo_dir else None, a.photos)
    held = list_images(a.holdout_dir) if a.holdout_dir else holdout_files()
    if not train or not held:
        p.error("no training or no held-out photos found")
    ew = load_encoder_weights(None)
    enc = build_encoder(a.layer, ew)
    dec = load_decoder(a.decoder or weights_dir() / f"decoder_{a.layer}.pt", encoder_id=ew.encoder_id).eval()
    last = dec.net[-1]
    t = time.perf_counter()
    A, B, yy, n = normal_equations(enc, dec, train, a.max_side, a.pixels)
    w0 = weights_of(last)

    fits = [refit(A, B, r) for r in ridges]
    base, *scores = held_out_psnr(enc, dec, [conv_of(last, w) for w in [w0] + fits], held, a.max_side)
    rows = [{"weights": "shipped", "ridge": None, "holdout_psnr": float(np.mean(base)), "per_photo": base,
             "train_mse": sampled_mse(A, B, yy, n, w0)}]
    for r, w, ps in zip(ridges, fits, scores):
        rows.append({"weights": "refit", "ridge": r, "holdout_psnr": float(np.mean(ps)), "per_photo": ps,
                     "better": sum(x > y for x, y in zip(ps, base)), "train_mse": sampled_mse(A, B, yy, n, w),
                     "relative_change": float((w - w0).norm() / w0.norm())})
    for row in rows:
        extra = (f", ridge {row['ridge']:g}, {row['better']}/{len(held)} photos better, weights moved "
                 f"{row['relative_change']:.0%}" if row["weights"] == "refit" else "")
        print(f"{row['weights']}: held out {row['holdout_psnr']:.3f} dB, training pixels' MSE "
              f"{row['train_mse']:.6f} ({10 * np.log10(1 / row['train_mse']):.2f} dB){extra}")
    print(f"({len(train)} training photos, {n:,} pixels, {len(held)} held out; {time.perf_counter() - t:.0f} s)")
    if a.json:
        info = machine_info(argv, __file__)
        write_json(a.json, {"machine": info, "photos": len(train), "pixels": n, "held_out": len(held),
                            "max_side": a.max_side, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
