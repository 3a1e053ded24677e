"""How much of a photo do one layer's features hold?  An upper-bound check for the decoder target.

For each held-out portrait (or a folder of photos), the image itself is optimised (L-BFGS on the
pixels, the idea of Mahendran & Vedaldi 2015, "Understanding deep image representations by
inverting them") so that its encoder features match the photo's:

    min_x  ||E(x) - E(photo)||^2 / ||E(photo)||^2      (x in [0, 1], no image prior)

and the PSNR of the result is compared with the shipped decoder's one-pass reconstruction.  Two
starts: flat grey (what the features alone pin down) and the decoder's output (whether the
features ask for more than the decoder gives).  If the optimised image is far sharper than the
decoder's, the decoder (its width, its training) is what limits benchmarks/autoencoder.py, not
the encoder; if it is no better, the layer itself is the limit.

    python benchmarks/inversion.py --holdout [--layer relu3_1] [--max-side 256] [--steps 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.autoencoder import chosen_files, psnr, read_at_most, ssim  # noqa: E402
from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from engines.decoder import load_decoder  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights, weights_dir  # noqa: E402
from realtime.images import bgr_to_tensor, fit_size, tensor_to_bgr  # noqa: E402


def letterbox(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` scaled to fit a side x side black square, centred."""
    ph, pw = fit_size(*img.shape[:2], (side, 0))
    small = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA)
    out = np.zeros((side, side, 3), np.uint8)
    y, x = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def invert(enc, target: torch.Tensor, x0: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
    """L-BFGS on the pixels from ``x0`` (1 x 3 x H x W in [0, 1]); the image stays in [0, 1]
    because the unconstrained variable is z, with x = 0.5 + 0.5 tanh(z)."""
    z = torch.atanh((x0.clamp(1e-3, 1 - 1e-3) - 0.5) * 2).contiguous().detach().requires_grad_(True)
    norm = float((target ** 2).sum())
    opt = torch.optim.LBFGS([z], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)
    last = [float("nan")]

    def closure():
        opt.zero_grad()
        loss = ((enc(0.5 + 0.5 * torch.tanh(z)) - target) ** 2).sum() / norm
        loss.backward()
        last[0] = float(loss.detach())
        return loss

    opt.step(closure)
    return (0.5 + 0.5 * torch.tanh(z)).detach(), last[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", help="folder of photos")
    p.add_argument("--holdout", action="store_true", help="the portraits held out of decoder training")
    p.add_argument("--layer", default="relu3_1", choices=["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    p.add_argument("--decoder", default=None, help="decoder file (default: weights/decoder_LAYER.pt)")
    p.add_argument("--max-side", type=int_at_least(16), default=256, help="longer side of each photo (default 256)")
    p.add_argument("--limit", type=int_at_least(1), default=8, help="photos at most (default 8)")
    p.add_argument("--steps", type=int_at_least(0), default=200, help="L-BFGS iterations per start (default 200)")
    p.add_argument("--starts", default="grey,decoder",
                   help="where the optimisation starts, comma-separated: grey, decoder (default both)")
    p.add_argument("--threads", type=int_at_least(1), default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None, help="PNG, a column per photo: photo, decoder, then one row per start")
    a = p.parse_args(argv)
    check_outputs(p, a.json, a.grid)
    if set(a.starts.split(",")) - {"grey", "decoder"}:
        p.error("--starts: grey and/or decoder")
    if a.threads:
        torch.set_num_threads(a.threads)
    files = chosen_files(p, a)[: a.limit]
    ew = load_encoder_weights(None)
    enc = build_encoder(a.layer, ew).eval()
    for q in enc.parameters():
        q.requires_grad_(False)
    dec_path = Path(a.decoder) if a.decoder else weights_dir() / f"decoder_{a.layer}.pt"
    dec = load_decoder(dec_path, encoder_id=ew.encoder_id) if dec_path.exists() else None
    rows, tiles = [], []
    for f in tqdm(files, desc=f"inverting {a.layer}", unit="photo"):
        img = read_at_most(f, a.max_side)
        x = bgr_to_tensor(img)
        with torch.no_grad():
            target = enc(x)
            y_dec = dec(target, out_size=img.shape[:2]).clamp(0, 1) if dec is not None else None
        row = {"file": Path(f).name, "size": f"{img.shape[1]}x{img.shape[0]}"}
        outs = [img]
        if y_dec is not None:
            d = tensor_to_bgr(y_dec)
            row.update(decoder_psnr=psnr(d, img), decoder_ssim=ssim(d, img))
            outs.append(d)
        starts = {"grey": lambda: torch.full_like(x, 0.5), "decoder": lambda: y_dec}
        for start in a.starts.split(","):
            if start == "decoder" and y_dec is None:
                continue
            name, x0 = f"from_{start}", starts[start]()
            t = time.perf_counter()
            xi, loss = invert(enc, target, x0, a.steps)
            o = tensor_to_bgr(xi)
            row.update({f"{name}_psnr": psnr(o, img), f"{name}_ssim": ssim(o, img), f"{name}_loss": loss,
                        f"{name}_s": time.perf_counter() - t})
            outs.append(o)
        rows.append(row)
        tiles.append(np.concatenate([letterbox(o, 192) for o in outs], 0))
    keys = [k for k in rows[0] if k.endswith(("_psnr", "_ssim", "_loss"))]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    info = machine_info(argv, __file__)
    print(f"\n{a.layer}, {len(rows)} photos, longer side <= {a.max_side}, {a.steps} L-BFGS steps per start "
          f"({info['cpu']}, {info['date']})")
    print("| reconstruction | mean PSNR (dB) | mean SSIM | relative feature error |\n|---|---|---|---|")
    if "decoder_psnr" in mean:
        print(f"| decoder ({dec_path.name}) | {mean['decoder_psnr']:.2f} | {mean['decoder_ssim']:.3f} | |")
    for name in ("grey", "decoder"):
        k = f"from_{name}"
        if f"{k}_psnr" in mean:
            print(f"| optimised from {name} | {mean[k + '_psnr']:.2f} | {mean[k + '_ssim']:.3f} | "
                  f"{mean[k + '_loss']:.2e} |")
    for r in rows:
        print("  " + r["file"][:40].ljust(40) + "  " + "  ".join(f"{k}={r[k]:.3g}" for k in keys))
    if a.json:
        write_json(a.json, {"machine": info, "layer": a.layer, "steps": a.steps, "max_side": a.max_side,
                            "mean": mean, "images": rows})
    if a.grid:
        cv2.imwrite(a.grid, np.concatenate(tiles, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
