"""Is the decoders' regional tone error the encoder's or the decoder's?  (Issue 3's 30 dB gap.)

The shipped decoders are furthest from the photo in flat regions: patches of skin or wall a shade
too light, dark or yellow (benchmarks/autoencoder.py: with both images blurred the wide relu3_1
decoder scores ~27 dB, while the photo reduced 4x and enlarged back scores ~31 dB).  Either the
features at ``--layer`` no longer say what the tone of a flat region was (an encoder limit, that no
decoder can undo), or they do and the decoder has not learnt to read it.

This benchmark trains small *probes* that map the features to the photo reduced to the feature grid
(area averages over the grid's cells, the "tone") and scores them on the held-out portraits at that
resolution, next to the decoder's output reduced the same way:

* ``linear``: one 1x1 convolution (each cell's tone from its own feature vector, linearly);
* ``mlp``:    1x1 -> ReLU -> 1x1 (256 hidden), each cell on its own, non-linearly;
* ``conv``:   three 3x3 convolutions (64 wide), seeing a 7x7-cell neighbourhood;
* ``fix``:    a correction of the decoder's own tone: it sees the features and the decoder's output
              reduced to the grid, and adds what four dilated 3x3 convolutions (64 wide, dilation
              1, 2, 4, 1 on a grid pooled 2x: a 33x33-cell neighbourhood) make of them to the
              decoder's tone (last layer zero at the start, so it begins at the decoder's score).

If a probe reads the tone better than the decoder (higher PSNR on the reduced image), the
information is in the features and the gap is the decoder's (training, loss, capacity); if no probe
comes close to what is needed for 30 dB, the encoder sets the ceiling.

    python benchmarks/tone_probe.py [--layer relu3_1] [--decoder weights/decoder_relu3_1_wide.pt]
        [--train-photos 300] [--steps 3000] [--json docs/results/tone_probe.json]

Needs the training photos (../shared/data/train/photos); about 10 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.autoencoder import holdout_files, psnr, read_at_most  # noqa: E402
from benchmarks.common import machine_info, write_json  # noqa: E402
from engines.decoder import load_decoder  # noqa: E402
from engines.vgg import LAYERS  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights, weights_dir  # noqa: E402
from realtime.images import bgr_to_tensor, tensor_to_bgr  # noqa: E402

STRIDE = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4, "relu4_1": 8}


def reduce(img: np.ndarray, stride: int) -> np.ndarray:
    """``img`` (H x W x 3) averaged over stride x stride cells, cropped to whole cells (float64)."""
    h, w = (img.shape[0] // stride) * stride, (img.shape[1] // stride) * stride
    x = img[:h, :w].astype(np.float64)
    return x.reshape(h // stride, stride, w // stride, stride, 3).mean(axis=(1, 3))


class Fix(nn.Module):
    """``fix``: decoder tone + a context network's correction (see the module docstring)."""

    def __init__(self, cin: int, w: int = 64):
        super().__init__()
        self.inp = nn.Conv2d(cin + 3, w, 1)
        self.ctx = nn.ModuleList([nn.Conv2d(w, w, 3, padding=d, dilation=d) for d in (1, 2, 4, 1)])
        self.out = nn.Conv2d(w, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feat: torch.Tensor, tone: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.inp(torch.cat([feat, tone], 1)))
        size = z.shape[-2:]
        z = nn.functional.avg_pool2d(z, 2, ceil_mode=True)
        for c in self.ctx:
            z = torch.relu(c(z))
        return tone + nn.functional.interpolate(self.out(z), size=size, mode="bilinear", align_corners=False)


def make_probe(kind: str, cin: int) -> nn.Module:
    if kind == "fix":
        return Fix(cin)
    if kind == "linear":
        return nn.Conv2d(cin, 3, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Conv2d(cin, 256, 1), nn.ReLU(), nn.Conv2d(256, 3, 1))
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(64, 3, 3, padding=1))
    raise ValueError(kind)


@torch.no_grad()
def flat_fields(enc, dec, levels=(0.15, 0.5, 0.85), side: int = 64) -> tuple[float, float, float]:
    """Decode uniform images of every colour on a levels^3 grid: (PSNR of the decoded colour in each
    field's centre half against the true colour, the largest error of one channel in 0-255 steps,
    the smallest distance between two fields' centre feature vectors at the decoder's input scale).
    A flat field is the simplest region there is; its features are a fixed function of its colour."""
    errs, vecs = [], []
    for b in levels:
        for g in levels:
            for r in levels:
                c = torch.tensor([b, g, r]).view(1, 3, 1, 1)
                feat = enc(c.expand(1, 3, side, side).contiguous())
                vecs.append((feat / dec.feat_scale)[0, :, feat.shape[2] // 2, feat.shape[3] // 2])
                y = dec(feat, out_size=(side, side)).clamp(0, 1)
                q = side // 4
                errs.append((y[0, :, q:side - q, q:side - q] - c[0]).flatten(1) * 255.0)
    e = torch.cat(errs, 1)
    d = torch.cdist(torch.stack(vecs), torch.stack(vecs))
    d.fill_diagonal_(float("inf"))
    return float(10 * np.log10(255.0 ** 2 / float((e ** 2).mean()))), float(e.abs().max()), float(d.min())


def training_set(enc, dec, stride: int, n: int, side: int, seed: int):
    """Features and reduced targets of ``n`` training photos (not held out), centre crops of
    side x side after the shorter side is scaled to ``side``."""
    from training.data import DEFAULT_DATA, holdout_names, iter_folder
    hold = holdout_names()
    names = sorted(p.name for p in (DEFAULT_DATA / "photos").iterdir() if p.name not in hold)
    random.Random(seed).shuffle(names)
    skip = hold | set(names[n:])  # read and resize only the n photos used
    feats, tones, dtones = [], [], []
    for p, img in iter_folder(DEFAULT_DATA / "photos", side, exclude=skip, desc="features"):
        h, w = img.shape[:2]
        y, x = (h - side) // 2, (w - side) // 2
        crop = img[y:y + side, x:x + side]
        with torch.no_grad():
            feat = enc(bgr_to_tensor(crop))
            y = tensor_to_bgr(dec(feat, out_size=crop.shape[:2])) if dec is not None else crop
        feats.append(feat.half())
        tones.append(torch.from_numpy(reduce(crop, stride) / 255.0).permute(2, 0, 1)[None].float())
        dtones.append(torch.from_numpy(reduce(y, stride) / 255.0).permute(2, 0, 1)[None].float())
    return torch.cat(feats), torch.cat(tones), torch.cat(dtones)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", default="relu3_1", choices=LAYERS[:4])
    p.add_argument("--decoder", default=None, help="decoder to compare (default: the shipped one for --layer)")
    p.add_argument("--train-photos", type=int, default=300)
    p.add_argument("--side", type=int, default=256, help="training crops (px)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--cells", type=int, default=32, help="training windows, in grid cells")
    p.add_argument("--probes", default="linear,mlp,conv,fix")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--flat-only", action="store_true", help="only the flat-field check (seconds, no training data)")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    stride = STRIDE[a.layer]
    ew = load_encoder_weights(None)
    enc = build_encoder(a.layer, ew)
    dec_path = a.decoder or weights_dir() / f"decoder_{a.layer}.pt"
    dec = load_decoder(dec_path, encoder_id=ew.encoder_id)
    scale = dec.feat_scale.float()  # the probes see the features as the decoder does (per-channel scale)

    flat_psnr, flat_max, flat_sep = flat_fields(enc, dec)
    print(f"flat fields (27 uniform colours): the decoder's colour {flat_psnr:.2f} dB, worst channel off by "
          f"{flat_max:.0f}/255; the nearest two fields' features {flat_sep:.2f} apart (at the decoder's input scale)")
    if a.flat_only:
        return 0
    t0 = time.perf_counter()
    kinds = a.probes.split(",")
    feats, tones, dtones = training_set(enc, dec if "fix" in kinds else None, stride, a.train_photos, a.side,
                                        a.seed)
    print(f"{len(feats)} training crops of {a.side} px, features {tuple(feats.shape[1:])} "
          f"({time.perf_counter() - t0:.0f} s)")

    # held-out portraits: features, the photo's tone, the decoder's output's tone
    held = []
    for f in holdout_files():
        img = read_at_most(f, a.max_side)
        with torch.no_grad():
            feat = enc(bgr_to_tensor(img))
            y = tensor_to_bgr(dec(feat, out_size=img.shape[:2]))
        held.append((f.name, feat, reduce(img, stride), reduce(y, stride), psnr(y, img)))

    def run(probe, feat, dtone):
        """The probe on scale-normalised features (and, for ``fix``, the decoder's tone)."""
        return probe(feat, dtone) if isinstance(probe, Fix) else probe(feat)

    rows = {"decoder": [psnr(r[3], r[2]) for r in held]}
    for kind in kinds:
        probe = make_probe(kind, feats.shape[1])
        opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
        bar = tqdm(range(a.steps), desc=kind, unit="it", mininterval=5)
        for _ in bar:
            # 16 random windows of cells x cells grid cells (all crops share one window position)
            idx = torch.randint(len(feats), (16,))
            c = min(a.cells, feats.shape[-1])
            y, x = (int(v) for v in torch.randint(feats.shape[-1] - c + 1, (2,)))
            f_win = feats[idx, :, y:y + c, x:x + c].float() / scale
            out = run(probe, f_win, dtones[idx, :, y:y + c, x:x + c])
            loss = ((out - tones[idx, :, y:y + c, x:x + c]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.5f}")
        with torch.no_grad():
            rows[kind] = []
            for _, feat, tone, dtone, _ in held:
                gh, gw = feat.shape[-2:]
                d = np.zeros((gh, gw, 3))  # the decoder's tone on the feature grid (edge cells repeated)
                d[:dtone.shape[0], :dtone.shape[1]] = dtone
                d[dtone.shape[0]:] = d[dtone.shape[0] - 1:dtone.shape[0]]
                d[:, dtone.shape[1]:] = d[:, dtone.shape[1] - 1:dtone.shape[1]]
                dt = torch.from_numpy(d / 255.0).permute(2, 0, 1)[None].float()
                out = run(probe, feat / scale, dt)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0
                rows[kind].append(psnr(out[:tone.shape[0], :tone.shape[1]], tone))

    info = machine_info(argv, __file__)
    print(f"\nPSNR (dB) of the tone (the image averaged over {stride}x{stride} cells, the feature grid) on "
          f"{len(held)} held-out portraits; decoder {Path(dec_path).name}, layer {a.layer}")
    print("| read by | mean PSNR of the tone (dB) | portraits better than the decoder |\n|---|---|---|")
    for k, v in rows.items():
        better = "" if k == "decoder" else f"{sum(x > d for x, d in zip(v, rows['decoder']))}/{len(v)}"
        print(f"| {k} | {np.mean(v):.2f} | {better} |")
    print(f"(the decoder's full-resolution PSNR on these: {np.mean([r[4] for r in held]):.2f} dB; "
          f"{info['cpu']}, {info['date']})")
    if a.json:
        write_json(a.json, {"machine": info, "layer": a.layer, "decoder": Path(dec_path).name,
                            "train_photos": len(feats), "side": a.side, "steps": a.steps, "stride": stride,
                            "mean_tone_psnr": {k: float(np.mean(v)) for k, v in rows.items()},
                            "decoder_full_psnr": float(np.mean([r[4] for r in held])),
                            "flat_field_psnr": flat_psnr, "flat_field_max_error": flat_max,
                            "flat_field_min_feature_distance": flat_sep,
                            "images": [{"file": r[0], **{k: v[i] for k, v in rows.items()}}
                                       for i, r in enumerate(held)]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
