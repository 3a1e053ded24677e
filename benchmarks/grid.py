"""Image grids for the README: portraits stylised in each mode, and a before/after strip of the demo clip.

    python benchmarks/grid.py [--pairs PHOTO:PAINTING ...] [--out docs/grid_modes.png] [--strip docs/demo_strip.png]

Default pairs: held-out portrait photos and portrait paintings from the research set whose
source repositories are MIT or Apache-2.0 licensed (see ../shared/data/train/SOURCES.tsv).
Columns: photo | painting | autoencoder (strength 0) | linear | adain | wct | gram.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import check_outputs, int_at_least  # noqa: E402

DEFAULT_PAIRS = [
    ("photos/deepface__img49.jpg", "paintings/LivePortrait__s5.jpg"),
    ("photos/PhotoMaker__yangmi_4.jpg", "paintings/LivePortrait__s3.jpg"),
    ("photos/face_recognition__alex-lacamoire.jpg", "paintings/PhotoMaker__newton_0.jpg"),
    ("photos/APDrawingGAN__garden-2768329_1920.jpg", "paintings/SadTalker__art_1.jpg"),
    ("photos/LivePortrait__s2.jpg", "paintings/Deep-Image-Analogy__BP_BP9.jpg"),
]
MODES = ("linear", "adain", "wct", "gram")


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def fit(img: np.ndarray, h: int) -> np.ndarray:
    s = h / img.shape[0]
    w = max(8, round(img.shape[1] * s))
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    side = h  # square tiles: centre crop or pad
    if w >= side:
        x = (w - side) // 2
        return out[:, x:x + side]
    pad = np.zeros((h, side, 3), np.uint8)
    pad[:, (side - w) // 2:(side - w) // 2 + w] = out
    return pad


def main(argv=None) -> int:
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from realtime.images import read_image, write_image
    from realtime.segment import make_segmenter
    from realtime.style import StyleBank
    from realtime.stylizer import Stylizer, StylizerConfig
    from training.data import DEFAULT_DATA
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="*", default=None, help="PHOTO:PAINTING paths")
    p.add_argument("--layer", default="relu3_1")
    p.add_argument("--size", type=int_at_least(16), default=384, help="processing size (longer side)")
    p.add_argument("--tile", type=int_at_least(16), default=176)
    p.add_argument("--out", default="docs/grid_modes.png")
    p.add_argument("--strip", default="docs/demo_strip.png")
    a = p.parse_args(argv)
    check_outputs(p, a.out, a.strip)
    if a.pairs and not all(":" in s for s in a.pairs):
        p.error("--pairs takes PHOTO:PAINTING paths")
    pairs = [tuple(s.split(":", 1)) for s in a.pairs] if a.pairs else \
        [(str(DEFAULT_DATA / ph), str(DEFAULT_DATA / pa)) for ph, pa in DEFAULT_PAIRS]
    ew = load_encoder_weights(None)
    enc = build_encoder(a.layer, ew)
    dec = load_decoder(weights_dir() / f"decoder_{a.layer}.pt", encoder_id=ew.encoder_id)
    rows = []
    t0 = time.perf_counter()
    for photo, painting in pairs:
        img = read_image(photo)
        s = a.size / max(img.shape[:2])
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        seg = make_segmenter("portrait", static=True)
        regions = seg(img)
        seg.close()
        bank = StyleBank(enc, "portrait", max_side=a.size)
        bank.add(painting)
        tiles = [label(fit(img, a.tile), "photo"), label(fit(read_image(painting), a.tile), "painting")]
        ae = Stylizer(StylizerConfig(layer=a.layer, strength=0.0), enc, dec, bank).stylize(img, regions)
        tiles.append(label(fit(ae, a.tile), "strength 0"))
        for mode in MODES:
            out = Stylizer(StylizerConfig(layer=a.layer, mode=mode), enc, dec, bank).stylize(img, regions)
            tiles.append(label(fit(out, a.tile), mode))
        rows.append(np.concatenate(tiles, 1))
    write_image(a.out, np.concatenate(rows, 0))
    print(f"wrote {a.out} ({len(pairs)} pairs, {time.perf_counter() - t0:.0f} s)")

    if a.strip:
        from realtime.capture import VideoFileSource
        from realtime.cli import DEMO_CLIP, DEMO_STYLE
        bank = StyleBank(enc, "portrait")
        bank.add(DEMO_STYLE)
        st = Stylizer(StylizerConfig(layer=a.layer), enc, dec, bank)
        seg = make_segmenter("portrait")
        top, bot = [], []
        for i, (f, _) in enumerate(VideoFileSource(DEMO_CLIP)):
            out = st.stylize(f, seg(f))
            if i % 19 == 0 and len(top) < 5:
                top.append(cv2.resize(f, (240, 180), interpolation=cv2.INTER_AREA))
                bot.append(cv2.resize(out, (240, 180), interpolation=cv2.INTER_AREA))
            if len(top) == 5:
                break
        seg.close()
        write_image(a.strip, np.concatenate([np.concatenate(top, 1), np.concatenate(bot, 1)], 0))
        print(f"wrote {a.strip}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
