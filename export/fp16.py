"""FP16 safety: the largest activation anywhere inside the encoder (and the decoder fed its
features), measured on real images.  FP16 overflows at 65504; export refuses FP16 when the
measured peak, times a safety factor, would overflow.

    python -m export.fp16 DIR [--out export/activation_range.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

FP16_MAX = 65504.0
SAFETY = 4.0                      # unseen images may be brighter / more textured than the sample
RANGE_FILE = Path(__file__).resolve().parent / "activation_range.json"


@torch.no_grad()
def peak_activations(module: torch.nn.Module, inputs) -> float:
    """max |activation| over every Conv2d output of ``module`` for all ``inputs``."""
    peak = [0.0]

    def hook(_m, _i, out):
        peak[0] = max(peak[0], float(out.detach().abs().max()))
    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        for x in inputs:
            y = module(x)
            peak[0] = max(peak[0], float(y.abs().max()))
    finally:
        for h in hs:
            h.remove()
    return peak[0]


def fp16_safe(peak: float) -> bool:
    return peak * SAFETY < FP16_MAX


def recorded_range() -> dict:
    return json.loads(RANGE_FILE.read_text()) if RANGE_FILE.exists() else {}


def measure(folder: str, max_images: int = 200, max_side: int = 1024) -> dict:
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from realtime.images import bgr_to_tensor, read_image
    from training.data import list_images
    ew = load_encoder_weights(None)
    files = list_images(folder)[:max_images]
    imgs = []
    for f in files:
        im = read_image(f)
        s = min(1.0, max_side / max(im.shape[:2]))
        imgs.append(bgr_to_tensor(cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)))
    res = {"images": len(imgs), "folder": str(folder), "max_side": max_side, "date": time.strftime("%Y-%m-%d"),
           "fp16_max": FP16_MAX, "safety": SAFETY}
    for layer in ("relu3_1", "relu4_1"):
        enc = build_encoder(layer, ew)
        res[f"encoder_{layer}"] = peak_activations(enc, imgs)
        feats = [enc(x) for x in imgs]
        res[f"tap_{layer}"] = max(float(f.max()) for f in feats)
        for p in (weights_dir() / f"decoder_{layer}.pt", weights_dir() / f"decoder_{layer}_wide.pt"):
            if p.exists():
                res[p.stem] = peak_activations(load_decoder(p), feats)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--max-images", type=int, default=200)
    p.add_argument("--out", default=str(RANGE_FILE))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = measure(a.folder, a.max_images)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
