"""Pack a training set small: every image resized to its shorter side and re-encoded as JPEG.

    python -m training.pack_data --out gpu_pack [--photos DIR] [--paintings DIR] [--side 256]
                                 [--quality 90] [--limit-mib 64] [--with-encoder] [--no-upscale]

The trainer reads each image once at ``--load-side`` (256 by default), so nothing is lost by
storing it at that size; the research set then fits in a few tens of MiB, small enough to
carry to a lent GPU machine (whose calls carry at most 64 MiB).  Held-out portraits
(``training/holdout.txt``) are left out (8 of them go to ``OUT/holdout``, for ``train_decoder
--holdout-dir``).  Output: ``OUT/photos`` and ``OUT/paintings``, written
to a temporary folder and renamed when complete.  Fails if the result exceeds ``--limit-mib``.
``--no-upscale`` keeps images whose shorter side is already below ``--side`` at their own size
(the trainer enlarges them at load time anyway; for a pack read at ``--load-side 512``, where four
in five research photos are smaller, it saves a third of the space).
``--with-encoder`` adds ``OUT/encoder.pt`` (+ ``.sha256``): the encoder's layers up to relu4_1
(12 MB instead of 59; ``engines.weights.export_slim``), which is all training and the live
paths use.  Copy it over ``weights/vgg16_hed_bsds500.pt`` (and its sidecar) on the GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from training.data import DEFAULT_DATA, holdout_names, iter_folder


# --format: how each image is encoded, and at which --quality.  WebP (lossy, VP8) keeps the 256-px
# training photos about 3 dB closer to the originals than JPEG in the same bytes (session 21, 150 photos:
# JPEG q60 33.3 dB at 12.3 KiB an image, WebP q60 34.1 dB at 9.7 KiB, WebP q80 36.7 dB at 14.1 KiB)
FORMATS = {"jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY)}
# every pack says it is one: only a folder holding this file is replaced by a new pack (a folder of
# photos/ and paintings/ that is not one -- the originals -- looks the same otherwise)
MARKER = "pack.json"


def check_out(out: Path, photos, paintings) -> None:
    """ValueError unless ``out`` is free to be (re)written: absent, an empty folder, or an earlier pack
    (its MARKER); and never a folder that holds, or is, the images being packed."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder name")
    for src in (photos, paintings):
        s, o = Path(src).resolve(), out.resolve()
        if s == o or o in s.parents:
            raise ValueError(f"--out {out} holds the images being packed ({src}): give another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} is not empty and not an earlier pack (no {MARKER}): give a new or "
                         "empty folder")


def pack(photos: str, paintings: str, out: Path, side: int = 256, quality: int = 90,
         limit_mib: float = 64.0, with_encoder: bool = False, upscale: bool = True, fmt: str = "jpg") -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {sorted(FORMATS)}, got {fmt!r}")
    suffix, flag = FORMATS[fmt]
    ok, buf = cv2.imencode(suffix, np.zeros((8, 8, 3), np.uint8), [flag, quality])
    if not ok or cv2.imdecode(buf, cv2.IMREAD_COLOR) is None:
        raise ValueError(f"this OpenCV cannot encode and decode {fmt}")
    out = Path(out)
    check_out(out, photos, paintings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))   # never a user's folder
    try:
        return _pack_into(tmp, photos, paintings, out, side, quality, limit_mib, with_encoder, upscale, suffix, flag)
    except BaseException:                 # an error or Ctrl-C: nothing half-written is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pack_into(tmp: Path, photos, paintings, out: Path, side, quality, limit_mib, with_encoder, upscale,
               suffix, flag) -> dict:
    hold = holdout_names()
    counts = {}
    for name, folder in (("photos", photos), ("paintings", paintings)):
        (tmp / name).mkdir(parents=True)
        n = 0
        for p, img in iter_folder(folder, side, hold, name, upscale=upscale):
            rel = p.relative_to(folder).with_suffix(suffix)
            dst = tmp / name / "__".join(rel.parts)       # flat, and distinct for same-named files
            ok, buf = cv2.imencode(suffix, img, [flag, quality])    # encode + write: any path, any OS
            if not ok:
                raise ValueError(f"could not encode {p} as {suffix}")
            buf.tofile(str(dst))
            n += 1
        if not n:
            raise ValueError(f"no readable images in {folder}")
        counts[name] = n
    # the 8 held-out portraits that training evaluates on (never trained on), copied as they are:
    # train_decoder sizes them itself (0.3 MB for the research set's)
    n = 0
    for name in sorted(hold)[:8]:
        if (Path(photos) / name).is_file():
            (tmp / "holdout" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(photos) / name, tmp / "holdout" / name)
            n += 1
    counts["holdout"] = n
    if with_encoder:
        from engines.weights import export_slim, load_hed_weights
        export_slim(load_hed_weights(), "relu4_1", tmp / "encoder.pt")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2 ** 20
    if size > limit_mib:
        raise ValueError(f"packed set is {size:.1f} MiB, over --limit-mib {limit_mib} (lower --side or --quality)")
    (tmp / MARKER).write_text(json.dumps({"side": side, "quality": quality, "format": suffix[1:],
                                          "upscale": upscale, **counts}, indent=2))
    old = None
    if out.exists():                       # an earlier pack (check_out): kept until the new one is in place
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {"mib": size, **counts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pack_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default=str(DEFAULT_DATA / "photos"),
                   help="folder of photos (default: ../shared/data/train/photos beside the project)")
    p.add_argument("--paintings", default=str(DEFAULT_DATA / "paintings"),
                   help="folder of paintings (default: ../shared/data/train/paintings beside the project)")
    p.add_argument("--out", required=True, type=Path,
                   help="the pack's folder: new, empty, or an earlier pack (its pack.json; replaced once the new "
                        "one is complete)")
    p.add_argument("--side", type=int, default=256, help="shorter side in pixels, at least 16 (default 256)")
    p.add_argument("--quality", type=int, default=90, help="JPEG or WebP quality, 1-100 (default 90)")
    p.add_argument("--format", default="jpg", choices=sorted(FORMATS),
                   help="jpg (default) or webp: about 3 dB closer to the originals in the same bytes; the "
                        "training machine's OpenCV must read it (benchmarks/gpu_session.sh checks)")
    p.add_argument("--limit-mib", type=float, default=64.0,
                   help="fail, writing nothing, if the pack would be larger (default 64: the device tool's limit)")
    p.add_argument("--with-encoder", action="store_true", help="add the encoder's layers up to relu4_1")
    p.add_argument("--no-upscale", action="store_true",
                   help="keep images smaller than --side at their own size instead of enlarging them")
    a = p.parse_args(argv)
    try:
        if not 1 <= a.quality <= 100:
            raise ValueError(f"--quality must be in 1..100, got {a.quality}")
        if a.side < 16:
            raise ValueError(f"--side must be at least 16, got {a.side}")
        if not a.limit_mib > 0:
            raise ValueError(f"--limit-mib must be above 0, got {a.limit_mib}")
        r = pack(a.photos, a.paintings, a.out, a.side, a.quality, a.limit_mib, a.with_encoder,
                 upscale=not a.no_upscale, fmt=a.format)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"python -m training.pack_data: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m training.pack_data: interrupted (nothing written)", file=sys.stderr)
        return 130
    print(f"{a.out}: {r['photos']} photos, {r['paintings']} paintings, {r['mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
