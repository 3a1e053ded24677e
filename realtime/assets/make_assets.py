"""Make the bundled demo clip and demo style from a public-domain photo that ships with matplotlib.

    python realtime/assets/make_assets.py [--out-dir DIR]     (default: this folder, replacing the bundled ones)

* ``demo_clip.mp4``: Grace Hopper's official portrait (US Navy, public domain;
  matplotlib's sample data) filmed by a virtual camera that pans, zooms and
  rolls slowly: 96 frames, 480x360, 24 fps.  The motion is a known affine warp per
  frame (written to ``demo_clip_motion.json``), so flow-based flicker metrics can
  be checked against exact motion.
* ``demo_style.jpg``: a painted portrait made here: the same photo, mirrored,
  re-coloured to a warm palette and repainted with a few thousand oriented brush
  strokes, coarse to fine (after Hertzmann 1998, "Painterly rendering with curved
  brush strokes of multiple sizes").  It has a face, hair and a background, so the
  portrait regions can be found on it.

Both are generated, so their licence is that of the photo (public domain).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def source_photo() -> np.ndarray:
    from matplotlib import cbook
    img = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert img is not None
    return img


def make_clip(img: np.ndarray, path: Path, n: int = 96, size=(480, 360), fps: int = 24) -> list:
    h, w = img.shape[:2]
    W, H = size
    motion = []
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    for i in range(n):
        t = i / (n - 1)
        zoom = 0.92 + 0.18 * np.sin(np.pi * t)                 # in and out
        angle = 4.0 * np.sin(2 * np.pi * t)                    # degrees of roll
        cx = w * (0.50 + 0.06 * np.sin(2 * np.pi * t))
        cy = h * (0.42 + 0.04 * np.cos(2 * np.pi * t))
        scale = zoom * W / (w * 0.9)
        M = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        M[0, 2] += W / 2 - cx
        M[1, 2] += H / 2 - cy
        frame = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        writer.write(frame)
        motion.append(M.tolist())
    writer.release()
    return motion


def make_style(img: np.ndarray, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.flip(img, 1)
    base = cv2.bilateralFilter(img, 9, 60, 9)
    # warm palette: ochre highlights, teal-blue shadows
    lab = cv2.cvtColor(base, cv2.COLOR_BGR2LAB).astype(np.float32)
    L = lab[..., 0] / 255.0
    lab[..., 1] = lab[..., 1] * 0.8 + 128 * 0.2 + 10 * (L - 0.5)
    lab[..., 2] = lab[..., 2] * 0.9 + 128 * 0.1 + 40 * (L - 0.35)
    base = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
    base = cv2.xphoto.oilPainting(base, 7, 1) if hasattr(cv2, "xphoto") else base
    canvas = cv2.GaussianBlur(base, (0, 0), 6)
    gray = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=5), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=5)
    h, w = gray.shape
    for radius, count, length in ((9, 2500, 28), (5, 6000, 16), (2, 9000, 8)):
        ref = cv2.GaussianBlur(base, (0, 0), radius)
        ys = rng.integers(0, h, count)
        xs = rng.integers(0, w, count)
        for y, x in zip(ys, xs):
            ang = np.arctan2(gy[y, x], gx[y, x]) + np.pi / 2 + rng.normal(0, 0.25)
            ln = length * rng.uniform(0.6, 1.3)
            dx, dy = np.cos(ang) * ln / 2, np.sin(ang) * ln / 2
            col = ref[y, x].astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3)
            cv2.line(canvas, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)),
                     tuple(int(c) for c in np.clip(col, 0, 255)), radius, cv2.LINE_AA)
    grain = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    weave = (np.sin(np.arange(w) * 2.1)[None, :, None] + np.sin(np.arange(h) * 2.3)[:, None, None]) * 3
    return np.clip(canvas.astype(np.float32) + grain + weave, 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python realtime/assets/make_assets.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=str(HERE), metavar="DIR",
                   help="where to write demo_clip.mp4, demo_clip_motion.json and demo_style.jpg (default: "
                        "this folder, replacing the bundled assets)")
    out = Path(p.parse_args(argv).out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img = source_photo()
    motion = make_clip(img, out / "demo_clip.mp4")
    (out / "demo_clip_motion.json").write_text(json.dumps({"frames": len(motion), "affine_2x3": motion}))
    cv2.imwrite(str(out / "demo_style.jpg"), make_style(img), [cv2.IMWRITE_JPEG_QUALITY, 92])
    print("wrote", out / "demo_clip.mp4", out / "demo_style.jpg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
