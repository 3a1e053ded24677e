"""Decoder check: PSNR and SSIM of encode -> decode on a folder of held-out photos, each at its own
size (longer side reduced to at most --max-side), and the relative feature error
||E(D(E(x))) - E(x)||^2 / ||E(x)||^2 (the paper's training objective, on the photo itself).

    python benchmarks/autoencoder.py DIR [--layer relu3_1] [--json out.json]
    python benchmarks/autoencoder.py --holdout      # the portraits kept out of training (training/holdout.txt)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import check_decoder, check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from engines.decoder import load_decoder  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights, weights_dir  # noqa: E402
from realtime.images import bgr_to_tensor, read_image, tensor_to_bgr, write_image  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def luma_share(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the squared error a - b that is luminance (the same error in all three
    channels) rather than colour.  Per pixel the error e splits into its channel mean l (times
    (1, 1, 1)) and a remainder orthogonal to (1, 1, 1), so |e|^2 = 3 l^2 + |e - l|^2 exactly; this is
    3 sum l^2 / sum |e|^2 (1: only brightness is wrong, 0: only hue and saturation)."""
    e = a.astype(np.float64) - b.astype(np.float64)
    total = float((e ** 2).sum())
    return float(3 * (e.mean(axis=-1) ** 2).sum() / total) if total > 0 else 0.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): Gaussian window sigma 1.5, K1=0.01, K2=0.03, on each BGR channel, averaged."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(m[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def psnr_lowpass(a: np.ndarray, b: np.ndarray, sigma: float = 2.0) -> float:
    """PSNR of both images blurred (Gaussian, ``sigma`` pixels): the error left once fine detail is
    discounted.  Close to the plain PSNR when the error is regional (patches of wrong colour or
    brightness), far above it when it is fine detail."""
    blur = lambda z: cv2.GaussianBlur(z.astype(np.float64), (0, 0), sigma)  # noqa: E731
    return psnr(blur(a), blur(b))


def psnr_less_smooth_error(y: np.ndarray, img: np.ndarray, sigma: float | None = 8.0) -> float:
    """PSNR of ``y`` against ``img`` once the smooth part of its error is taken away: the error
    img - y blurred (Gaussian, ``sigma`` px) is added to ``y``; ``sigma=None`` takes away only the
    error's mean per channel (a colour cast over the whole image).  How much of the PSNR lost is
    regional tone on that scale, which a decoder with the right colours per region would win back."""
    e = img.astype(np.float64) - y.astype(np.float64)
    fix = e.reshape(-1, 3).mean(0) if sigma is None else cv2.GaussianBlur(e, (0, 0), sigma)
    return psnr(y.astype(np.float64) + fix, img)


def error_parts(y: np.ndarray, img: np.ndarray, sigma: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """The photo ``img`` with only the smooth part of the decoded image's error (y - img blurred, Gaussian,
    ``sigma`` px) added, and with only the rest (the detail) added, each rounded and clipped to 8 bits.
    Encoding each and comparing its features with the photo's says how strongly the encoder sees each
    kind of error -- how much the feature loss, and the features themselves, tell the decoder about it."""
    e = y.astype(np.float64) - img.astype(np.float64)
    smooth = cv2.GaussianBlur(e, (0, 0), sigma)
    add = lambda d: np.clip(np.rint(img.astype(np.float64) + d), 0, 255).astype(np.uint8)  # noqa: E731
    return add(smooth), add(e - smooth)


def psnr_bicubic(img: np.ndarray, factor: int = 4) -> float:
    """PSNR of ``img`` reduced ``factor`` times (area) and enlarged back (bicubic): what keeping only
    the resolution of relu3_1's grid (1/4) would give, a yardstick for the decoder's PSNR."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return psnr(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), img)


def holdout_files() -> list[Path]:
    from training.data import DEFAULT_DATA, holdout_names
    return [DEFAULT_DATA / "photos" / n for n in sorted(holdout_names())]


def training_files(n: int) -> list[Path]:
    """``n`` TRAINING photos from the held-out portraits' source repositories (the part of a name
    before ``__``), in a fixed random order: the same benchmark on data the decoder has seen, to tell
    underfitting (both low) from overfitting (held-out far below)."""
    import random
    from training.data import DEFAULT_DATA, holdout_names
    hold = set(holdout_names())
    repos = {h.split("__")[0] for h in hold}
    names = sorted(p.name for p in (DEFAULT_DATA / "photos").iterdir()
                   if p.name not in hold and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(names)
    return [DEFAULT_DATA / "photos" / n for n in names if n.split("__")[0] in repos][:n]


def chosen_files(parser, args) -> list[Path]:
    """The photos of ``args.dir`` or, with ``args.holdout``, the held-out portraits, or with
    ``args.training`` that many training photos (a parser error if none or none found)."""
    if getattr(args, "training", 0):
        files = training_files(args.training)
    elif args.holdout:
        files = holdout_files()
    elif args.dir:
        from training.data import list_images
        if not Path(args.dir).is_dir():
            parser.error(f"{args.dir}: no such folder")
        files = list_images(args.dir)
    else:
        parser.error("give DIR, --holdout or --training N")
    if not files:
        parser.error("no photos found")
    return files


def read_at_most(path, max_side: int) -> np.ndarray:
    """The photo at ``path``, its longer side reduced to ``max_side`` if larger (area interpolation)."""
    img = read_image(path)
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return img


@torch.no_grad()
def evaluate(files, layer: str, decoder: str | None, max_side: int, split: bool = False, encoder=None,
             decoder_engine=None) -> list[dict]:
    """Encode -> decode each photo; ``encoder`` / ``decoder_engine``: engines in the PyTorch networks'
    places (e.g. ONNX Runtime's, benchmarks/int8.py); the encoder serves the feature errors too."""
    ew = load_encoder_weights(None)
    enc = encoder if encoder is not None else build_encoder(layer, ew)
    if decoder_engine is not None:
        def dec(f, out_size):          # as the stylizer: ceil-mode pooling, so odd sizes come back larger
            return decoder_engine(f)[..., : out_size[0], : out_size[1]]
    else:
        dec = load_decoder(decoder or weights_dir() / f"decoder_{layer}.pt", encoder_id=ew.encoder_id)
    rows = []
    for f in files:
        img = read_at_most(f, max_side)
        t = time.perf_counter()
        x = bgr_to_tensor(img)
        feat = enc(x)
        y_t = dec(feat, out_size=img.shape[:2])
        y = tensor_to_bgr(y_t)
        ms = (time.perf_counter() - t) * 1000
        # the paper's objective on this photo: how far an image's features are from the photo's
        def rel(z: torch.Tensor) -> float:
            return float(((enc(z) - feat) ** 2).sum() / (feat ** 2).sum())

        ferr = rel(y_t.clamp(0, 1))
        rows.append({"file": Path(f).name, "size": f"{img.shape[1]}x{img.shape[0]}", "psnr": psnr(y, img),
                     "ssim": ssim(y, img), "feature_error": ferr, "luma_share": luma_share(y, img), "ms": ms,
                     "psnr_lowpass": psnr_lowpass(y, img), "psnr_bicubic4": psnr_bicubic(img, 4),
                     "psnr_less_cast": psnr_less_smooth_error(y, img, None),
                     "psnr_less_smooth8": psnr_less_smooth_error(y, img, 8.0)})
        if split:
            smooth, detail = error_parts(y, img, 8.0)
            rows[-1].update({"psnr_smooth8_only": psnr(smooth, img),
                             "feature_error_smooth8_only": rel(bgr_to_tensor(smooth)),
                             "psnr_detail_only": psnr(detail, img),
                             "feature_error_detail_only": rel(bgr_to_tensor(detail))})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", help="folder of photos")
    p.add_argument("--holdout", action="store_true", help="use the portraits held out of training")
    p.add_argument("--training", type=int_at_least(0), default=0, metavar="N",
                   help="use N training photos from the held-out portraits' sources instead (overfitting check)")
    p.add_argument("--layer", default="relu3_1", choices=["relu3_1", "relu4_1"], help="VGG layer (default relu3_1)")
    p.add_argument("--decoder", default=None, metavar="small|wide|PATH",
                   help="the decoder to judge (default: the shipped one of the layer, weights/decoder_LAYER.pt)")
    p.add_argument("--max-side", type=int_at_least(16), default=512,
                   help="photos larger than this on their longer side are reduced to it (default 512)")
    p.add_argument("--json", default=None, help="write the results and the machine's record to this JSON file")
    p.add_argument("--grid", default=None, help="write a PNG grid (input over reconstruction)")
    p.add_argument("--split-error", action="store_true",
                   help="also add the smooth part (sigma 8 px) of each decoded image's error to the photo, and "
                        "the rest, and report each one's PSNR and relative feature error: how strongly the "
                        "encoder sees regional tone errors against detail errors (two more encoder passes)")
    a = p.parse_args(argv)
    check_outputs(p, a.json, a.grid)
    if check_decoder(p, a.decoder, a.layer) is not None:     # small / wide as the CLI's --decoder, or a file
        from engines.decoder import resolve_decoder
        a.decoder = str(resolve_decoder(a.decoder, a.layer))
    files = chosen_files(p, a)
    rows = evaluate(files, a.layer, a.decoder, a.max_side, split=a.split_error)
    mp, ms = float(np.mean([r["psnr"] for r in rows])), float(np.mean([r["ssim"] for r in rows]))
    mf = float(np.mean([r["feature_error"] for r in rows]))
    ml = float(np.mean([r["luma_share"] for r in rows]))
    info = machine_info(argv, __file__)
    print(f"| layer | images | mean PSNR (dB) | mean SSIM | relative feature error | machine | date |\n"
          f"|---|---|---|---|---|---|---|\n"
          f"| {a.layer} | {len(rows)} | {mp:.2f} | {ms:.4f} | {mf:.4f} | {info['cpu']} ({info['cores']} cores) "
          f"| {info['date']} |")
    for r in rows:
        print(f"  {r['file']:<45} {r['size']:>9}  {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  "
              f"feature error {r['feature_error']:.4f}  luminance {100 * r['luma_share']:.0f} % of the error  "
              f"{r['ms']:.0f} ms")
    print(f"luminance: {100 * ml:.0f} % of the squared error on average (the rest is colour)")
    mlo = float(np.mean([r["psnr_lowpass"] for r in rows]))
    mb4 = float(np.mean([r["psnr_bicubic4"] for r in rows]))
    print(f"both blurred (sigma 2 px): {mlo:.2f} dB (fine detail discounted); the photo reduced 4x and "
          f"enlarged back (bicubic): {mb4:.2f} dB")
    mcast = float(np.mean([r["psnr_less_cast"] for r in rows]))
    ms8 = float(np.mean([r["psnr_less_smooth8"] for r in rows]))
    print(f"with the error's mean colour taken away: {mcast:.2f} dB; with its smooth part (the error blurred, "
          f"sigma 8 px) taken away: {ms8:.2f} dB")
    split = {}
    if a.split_error:
        split = {f"mean_{k}": float(np.mean([r[k] for r in rows])) for k in
                 ("psnr_smooth8_only", "feature_error_smooth8_only", "psnr_detail_only", "feature_error_detail_only")}
        print(f"the error split (sigma 8 px), each part alone added to the photo: the smooth part "
              f"{split['mean_psnr_smooth8_only']:.2f} dB, relative feature error "
              f"{split['mean_feature_error_smooth8_only']:.4f}; the rest {split['mean_psnr_detail_only']:.2f} dB, "
              f"{split['mean_feature_error_detail_only']:.4f}")
    if a.json:
        write_json(a.json, {"machine": info, "layer": a.layer, "mean_psnr": mp, "mean_ssim": ms,
                            "mean_feature_error": mf, "mean_luma_share": ml, "mean_psnr_lowpass": mlo,
                            "mean_psnr_bicubic4": mb4, "mean_psnr_less_cast": mcast,
                            "mean_psnr_less_smooth8": ms8, **split, "images": rows})
    if a.grid:
        ew = load_encoder_weights(None)
        enc = build_encoder(a.layer, ew)
        dec = load_decoder(a.decoder or weights_dir() / f"decoder_{a.layer}.pt", encoder_id=ew.encoder_id)
        tiles = []
        for f in files[:8]:
            img = cv2.resize(read_image(f), (192, 192), interpolation=cv2.INTER_AREA)
            with torch.no_grad():
                y = tensor_to_bgr(dec(enc(bgr_to_tensor(img)), out_size=img.shape[:2]))
            tiles.append(np.concatenate([img, y], 0))
        write_image(a.grid, np.concatenate(tiles, 1))         # raises if it cannot (was silently ignored)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
