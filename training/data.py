"""Training images: two folders (photos, paintings), preloaded small, cropped at random.

The default folders are the project's research set (``../shared/data/train``),
which exists only on the developers' machines; any two folders of images work.
A fixed handful of portrait photos is held out of training for the quality
report (``training/holdout.txt``, file names only).
"""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realtime.images import read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "train"
HOLDOUT_FILE = Path(__file__).resolve().parent / "holdout.txt"


def holdout_names() -> set[str]:
    if not HOLDOUT_FILE.exists():
        return set()
    return {ln.strip() for ln in HOLDOUT_FILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def folder_digest(folder: str | Path) -> str:
    """A short digest of which images a folder holds (their relative names and byte sizes): two folders
    with as many images but other ones differ (training's feature cache keys on it)."""
    import hashlib
    folder = Path(folder)
    h = hashlib.sha256()
    for p in list_images(folder):
        h.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def iter_folder(folder: str | Path, short_side: int, exclude: set[str] = frozenset(), desc: str = "loading",
                counter: dict | None = None, upscale: bool = True):
    """(path, image) for every readable image, resized so its shorter side is ``short_side``
    (``upscale=False``: images already smaller are kept at their own size)."""
    for p in tqdm(list_images(folder), desc=desc, unit="img", leave=False):
        if p.name in exclude:
            continue
        try:
            img = read_image(p)           # as the product reads it: EXIF orientation applied, alpha flattened
        except (ValueError, OSError):
            log.warning("skipping unreadable image %s", p)
            if counter is not None:
                counter["bad"] = counter.get("bad", 0) + 1
            continue
        h, w = img.shape[:2]
        s = short_side / min(h, w)
        if s > 1 and not upscale:
            yield p, img
            continue
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        yield p, img


def load_folder(folder: str | Path, short_side: int, exclude: set[str] = frozenset(),
                desc: str = "loading") -> list[np.ndarray]:
    """Read every image once, resized so its shorter side is ``short_side``; skip unreadable ones."""
    counter: dict = {}
    out = [img for _, img in iter_folder(folder, short_side, exclude, desc, counter)]
    bad = counter.get("bad", 0)
    if bad:
        log.warning("%s: skipped %d unreadable image(s), kept %d", folder, bad, len(out))
    if not out:
        raise ValueError(f"no readable images in {folder}")
    return out


class CropSampler:
    """Random crops with random scale and horizontal flip, as float BGR [0,1] arrays."""

    def __init__(self, images: list[np.ndarray], crop: int, scale: tuple[float, float], rng: random.Random,
                 smooth: float = 0.0, smooth_sigma: tuple[float, float] = (1.0, 8.0)):
        self.images, self.crop, self.scale, self.rng = images, crop, scale, rng
        # smooth: the share of crops blurred (Gaussian, sigma log-uniform in smooth_sigma px), so the
        # decoder also sees large smooth regions -- flat skin and walls at the live frame's scale, which
        # the training photos (reduced to a 256-px short side) rarely have (session 13, weights/README.md)
        self.smooth, self.smooth_sigma = float(smooth), smooth_sigma

    def sample(self) -> np.ndarray:
        img = self.images[self.rng.randrange(len(self.images))]
        h, w = img.shape[:2]
        s = self.rng.uniform(*self.scale)             # output px per source px
        side = min(h, w, max(8, int(round(self.crop / s))))
        y = self.rng.randrange(h - side + 1)
        x = self.rng.randrange(w - side + 1)
        patch = img[y:y + side, x:x + side]
        if side != self.crop:
            patch = cv2.resize(patch, (self.crop, self.crop),
                               interpolation=cv2.INTER_AREA if side > self.crop else cv2.INTER_LINEAR)
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.smooth > 0 and self.rng.random() < self.smooth:  # no draw at all when off: old runs resume alike
            lo, hi = self.smooth_sigma
            sigma = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
            patch = cv2.GaussianBlur(np.ascontiguousarray(patch), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        return np.ascontiguousarray(patch)
