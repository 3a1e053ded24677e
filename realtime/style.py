"""Styles: each painting is encoded once, its per-region statistics cached.

Switching between loaded styles costs nothing per frame.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .images import bgr_to_tensor, fit_size, read_image
from .reconstruct import StyleStats
from .segment import REGION_SETS, make_segmenter

log = logging.getLogger(__name__)

MIN_STYLE_SIDE = 32  # below this the encoder's relu4_1 map is a handful of pixels
STYLE_MAX_SIDE = 512  # paintings are encoded at most this large on their longer side (StyleBank)


def check_style_size(img: np.ndarray, path) -> None:
    """ValueError for a painting too small to take statistics from (MIN_STYLE_SIDE per side)."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_STYLE_SIDE:
        raise ValueError(f"style image {path} is {w}x{h}; it needs at least {MIN_STYLE_SIDE} pixels per side")


@dataclass
class Style:
    name: str
    image: np.ndarray                 # H x W x 3 uint8 BGR, at the size it was encoded
    masks: np.ndarray                 # K x H x W
    stats: StyleStats                 # at the stylizer's layer
    fallback_regions: tuple[str, ...]


class StyleBank:
    """Loads paintings once; ``current`` is the active style, ``cycle()`` switches."""

    def __init__(self, encoder, regions: str = "portrait", max_side: int = STYLE_MAX_SIDE, device="cpu"):
        if regions not in REGION_SETS:
            raise ValueError(f"regions must be one of {tuple(REGION_SETS)}, got {regions!r}")
        self.encoder, self.regions, self.max_side, self.device = encoder, regions, int(max_side), device
        self.styles: list[Style] = []
        self.index = 0

    def add(self, path: str | Path, label_map: str | Path | np.ndarray | None = None,
            image: np.ndarray | None = None) -> Style:
        img = read_image(path) if image is None else image
        check_style_size(img, path)
        h, w = img.shape[:2]
        if max(h, w) > self.max_side:
            import cv2
            th, tw = fit_size(h, w, (self.max_side, 0))
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        seg = make_segmenter(self.regions, static=True, label_map=label_map)
        try:
            masks = seg(img)
            found = getattr(seg, "found_person", True)
        finally:
            seg.close()
        names = REGION_SETS[self.regions]
        with torch.no_grad():
            feat = self.encoder(bgr_to_tensor(img, self.device))
        stats = StyleStats.from_features(feat, torch.from_numpy(masks).to(feat.device))
        fb = tuple(names[k] for k in stats.fallback)
        if self.regions != "none" and (fb or not found):
            log.warning("style %s: no %s found in the painting; those regions use the painting's global "
                        "statistics (give a --style-regions label map to control this)", Path(str(path)).name,
                        " or ".join(fb) or "person")
        style = Style(Path(str(path)).name, img, masks, stats, fb)
        self.styles.append(style)
        return style

    @property
    def current(self) -> Style:
        if not self.styles:
            raise RuntimeError("no style loaded")
        return self.styles[self.index]

    def select(self, i: int) -> Style:
        if not 0 <= i < len(self.styles):
            raise IndexError(f"style {i} does not exist ({len(self.styles)} loaded)")
        self.index = i
        return self.current

    def cycle(self, step: int = 1) -> Style:
        self.index = (self.index + step) % len(self.styles)
        return self.current

    def __len__(self):
        return len(self.styles)
