"""What the GPU's packed training set loses to compression, and whether the decoder has learnt that look.

    python benchmarks/pack_quality.py [--photos DIR] [--n 150] [--side 256] [--portraits DIR]
                                      [--decoder FILE] [--json out.json]

1. Formats: ``--n`` training photos (a fixed random choice, the held-out portraits left out), each
   resized to its shorter side ``--side`` as ``training.pack_data`` does, encoded as JPEG and WebP at
   several qualities: the mean and the worst PSNR against the resized original, and the mean size.
2. The decoder (default: the shipped relu3_1 one) on the held-out portraits (or ``--portraits DIR``), at
   their size with the longer side at most 512 px (as ``benchmarks/autoencoder.py``) and at the pack's
   256-px shorter side: the PSNR of encode -> decode of the clean photo against itself, of its JPEG q60
   version (what the GPU calls of sessions 3-20 trained on) against itself, and of that JPEG's decoding
   against the clean photo.  A decoder that reconstructs the compressed photos better than the clean
   ones has learnt their look -- a gap that cleaner training images can close.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_info, write_json  # noqa: E402

FORMATS = [("jpg", 60), ("jpg", 75), ("jpg", 90), ("webp", 60), ("webp", 75), ("webp", 80)]
_FLAGS = {"jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images of the same shape, 8-bit or [0, 1] floats (the same scale for both)."""
    peak = 255.0 if a.dtype == np.uint8 else 1.0
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(peak ** 2 / max(mse, 1e-12 * peak ** 2))


def compress(img: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, int]:
    """``img`` encoded as ``fmt`` at ``quality`` and decoded again, and the encoded size in bytes."""
    suffix, flag = _FLAGS[fmt]
    ok, buf = cv2.imencode(suffix, img, [flag, quality])
    if not ok:
        raise RuntimeError(f"this OpenCV cannot encode {fmt}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR), len(buf)


def formats_table(photos: list[np.ndarray]) -> list[dict]:
    rows = []
    for fmt, q in FORMATS:
        ps, size = [], 0
        for img in photos:
            dec, n = compress(img, fmt, q)
            ps.append(psnr(img, dec))
            size += n
        rows.append({"format": fmt, "quality": q, "psnr_mean": float(np.mean(ps)), "psnr_min": float(np.min(ps)),
                     "kib_mean": size / len(photos) / 1024})
    return rows


def decoder_table(files: list[Path], decoder: str | None) -> dict:
    import torch
    from benchmarks.autoencoder import read_at_most
    from engines.decoder import default_decoder_path, load_decoder
    from engines.weights import build_encoder
    path = Path(decoder) if decoder else default_decoder_path("relu3_1")
    dec = load_decoder(path).eval()
    enc = build_encoder(dec.layer)

    def roundtrip(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = dec(enc(x), out_size=x.shape[-2:]).clamp(0, 1)
        return y[0].permute(1, 2, 0).numpy()

    out = {"decoder": str(path), "portraits": len(files)}
    for size in ("longer_512", "shorter_256"):
        r = {"clean": [], "jpeg60": [], "jpeg60_decoded_vs_clean": [], "jpeg60_vs_clean": []}
        for f in files:
            img = read_at_most(f, 512)
            if size == "shorter_256":
                s = 256 / min(img.shape[:2])
                img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                 interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            j, _ = compress(img, "jpg", 60)
            c, jf = img.astype(np.float32) / 255, j.astype(np.float32) / 255
            oc, oj = roundtrip(img), roundtrip(j)
            r["clean"].append(psnr(oc, c))
            r["jpeg60"].append(psnr(oj, jf))
            r["jpeg60_decoded_vs_clean"].append(psnr(oj, c))
            r["jpeg60_vs_clean"].append(psnr(jf, c))
        out[size] = {k: float(np.mean(v)) for k, v in r.items()}
    return out


def main(argv=None) -> int:
    from training.data import DEFAULT_DATA, holdout_names, iter_folder, list_images
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(DEFAULT_DATA / "photos"), help="training photos (default: %(default)s)")
    p.add_argument("--n", type=int, default=150, help="how many of them (default: %(default)s)")
    p.add_argument("--side", type=int, default=256, help="their shorter side, as packed (default: %(default)s)")
    p.add_argument("--portraits", default=None,
                   help="photos to reconstruct (default: the held-out portraits of training/holdout.txt)")
    p.add_argument("--decoder", default=None, help="decoder file (default: the shipped relu3_1 one)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.n < 1:
        p.error("--n must be at least 1")
    hold = set(holdout_names())
    try:
        photos = [img for _, img in iter_folder(a.photos, a.side, hold, "photos", {})]
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    if not photos:
        p.error(f"no readable photos in {a.photos}")
    random.Random(0).shuffle(photos)
    photos = photos[:a.n]
    if a.portraits:
        try:
            files = list_images(a.portraits)
        except (FileNotFoundError, ValueError) as e:
            p.error(str(e))
    else:
        files = [Path(a.photos) / n for n in sorted(hold) if (Path(a.photos) / n).is_file()]
    if not files:
        p.error("no portraits to reconstruct (--portraits DIR)")
    fmts = formats_table(photos)
    print(f"{len(photos)} training photos at a {a.side}-px shorter side, against the resized originals:")
    for r in fmts:
        print(f"  {r['format']:<5} q{r['quality']:<3} PSNR {r['psnr_mean']:6.2f} dB (worst {r['psnr_min']:5.1f})"
              f"  {r['kib_mean']:6.1f} KiB an image")
    dt = decoder_table(files, a.decoder)
    print(f"\n{dt['decoder']} on {dt['portraits']} portraits, encode -> decode PSNR:")
    for size in ("longer_512", "shorter_256"):
        d = dt[size]
        print(f"  {size:<12} clean {d['clean']:6.2f} dB   JPEG q60 {d['jpeg60']:6.2f} dB   JPEG q60 decoded vs clean "
              f"{d['jpeg60_decoded_vs_clean']:6.2f} dB   (JPEG q60 vs clean {d['jpeg60_vs_clean']:5.2f} dB)")
    info = machine_info(argv, __file__)
    print(f"\n{info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "photos": a.photos, "n": len(photos), "side": a.side,
                            "formats": fmts, "decoder": dt})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
