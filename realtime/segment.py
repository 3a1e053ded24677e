"""Semantic regions: frame -> K soft region maps (K x H x W float32, summing to 1 per pixel).

Region sets (``--regions``):
  none      K=1  the whole frame
  person    K=2  background, person
  portrait  K=3  background, person (hair, body, clothes), face

``MediaPipeSegmenter`` wraps MediaPipe 0.10.21's legacy ``solutions`` API (selfie
segmentation for the person, face mesh for the face oval) behind our own
interface, because that API changed under its users (dropped in 0.10.30).
Frames use video mode with masks smoothed over time; paintings use
static-image mode.  ``LabelMapSegmenter`` reads a colour label map instead
(``--style-regions``/``--content-regions``), with the colours in ``LABEL_COLORS``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .resource import Resource

log = logging.getLogger(__name__)

REGION_SETS = {"none": ("all",), "person": ("background", "person"), "portrait": ("background", "person", "face")}
# Label-map colours (RGB, as a paint program shows them): background black, person red, face green.
LABEL_COLORS = {"background": (0, 0, 0), "person": (255, 0, 0), "face": (0, 255, 0)}
LABEL_TOLERANCE = 80.0  # max distance (0-255 RGB) from a palette colour: JPEG-saved maps still work


class Segmenter(Resource):
    """frame (H x W x 3 uint8 BGR) -> K x H x W float32 soft regions summing to 1."""
    regions: tuple[str, ...] = ("all",)

    @property
    def num_regions(self) -> int:
        return len(self.regions)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget temporal state (scene cut, new source)."""


class WholeFrameSegmenter(Segmenter):
    regions = ("all",)

    def __call__(self, frame):
        return np.ones((1, *frame.shape[:2]), np.float32)


def label_map_to_masks(label_bgr: np.ndarray, regions: tuple[str, ...] = REGION_SETS["portrait"],
                       size: tuple[int, int] | None = None, what: str = "label map") -> np.ndarray:
    """Colour label map -> one-hot K x H x W masks (optionally resized to ``size`` = (H, W))."""
    rgb = label_bgr[..., ::-1].astype(np.float32)
    names = [r for r in regions if r in LABEL_COLORS]
    if len(names) != len(regions):
        raise ValueError(f"label maps describe the regions {tuple(LABEL_COLORS)}; cannot make {regions}")
    pal = np.array([LABEL_COLORS[r] for r in regions], np.float32)
    d = np.linalg.norm(rgb[:, :, None, :] - pal[None, None], axis=-1)
    lab = d.argmin(-1)
    far = d.min(-1) > LABEL_TOLERANCE
    if far.mean() > 0.01:
        cols = ", ".join(f"{r}=RGB{LABEL_COLORS[r]}" for r in regions)
        raise ValueError(f"{what}: {far.mean():.0%} of pixels are none of the label colours ({cols})")
    masks = np.stack([(lab == k).astype(np.float32) for k in range(len(regions))])
    if size is not None and masks.shape[1:] != tuple(size):
        masks = np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_AREA) for m in masks])
        masks /= np.maximum(masks.sum(0, keepdims=True), 1e-6)
    return masks


class LabelMapSegmenter(Segmenter):
    """A fixed label map (a file, or a BGR array), resized to each frame.

    The masks depend on the frame's size only, so those of the last size are kept and the same array
    is handed out again instead of being recomputed every frame of a video (its users -- the
    stylizer, the style bank, gatys -- only read it; not marked read-only, since torch.from_numpy
    warns on such arrays)."""

    def __init__(self, label: str | Path | np.ndarray, regions: tuple[str, ...] = REGION_SETS["portrait"]):
        from .images import read_image
        if isinstance(label, np.ndarray):
            self.path, self.label, self.what = None, label, "label map"
        else:
            self.path = Path(label)
            self.label, self.what = read_image(self.path), str(self.path)
        self.regions = tuple(regions)
        label_map_to_masks(self.label, self.regions, what=self.what)  # validate now
        self._last: tuple[tuple[int, int], np.ndarray] | None = None

    def __call__(self, frame):
        size = tuple(frame.shape[:2])
        if self._last is None or self._last[0] != size:
            self._last = (size, label_map_to_masks(self.label, self.regions, size, self.what))
        return self._last[1]


def _oval_order(connections) -> list[int]:
    """Face-mesh FACE_OVAL edges (unordered pairs) -> the closed loop of landmark indices."""
    adj: dict[int, list[int]] = {}
    for a, b in connections:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    start = min(adj)
    loop, prev, cur = [start], None, start
    while True:
        nxt = [n for n in adj[cur] if n != prev]
        if not nxt or nxt[0] == start:
            break
        prev, cur = cur, nxt[0]
        loop.append(cur)
    return loop


class MediaPipeSegmenter(Segmenter):
    """Person (selfie segmentation) and face oval (face mesh) as soft regions.

    ``static=True`` for single images (paintings): static-image mode, no smoothing.
    ``static=False`` for video: tracking mode, and an exponential moving average of the
    masks (``smoothing``) so that edges do not flicker.  ``feather`` blurs the region
    edges (in pixels at 480p), so there is no hard seam or halo.
    """

    def __init__(self, regions: str = "portrait", static: bool = False, smoothing: float = 0.6,
                 feather: float = 3.0):
        if regions not in ("person", "portrait"):
            raise ValueError(f"MediaPipeSegmenter regions must be 'person' or 'portrait', got {regions!r}")
        try:
            import mediapipe as mp
            sol = mp.solutions
        except (ImportError, AttributeError) as e:  # pragma: no cover - depends on the install
            raise RuntimeError("MediaPipe with its legacy 'solutions' API is required for --regions "
                               f"{regions}: pip install mediapipe==0.10.21 ({e})") from e
        self.regions = REGION_SETS[regions]
        self.static, self.smoothing, self.feather = static, float(smoothing), float(feather)
        self._selfie = sol.selfie_segmentation.SelfieSegmentation(model_selection=1 if static else 0)
        self._mesh = None
        if regions == "portrait":
            self._mesh = sol.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=4,
                                                refine_landmarks=False, min_detection_confidence=0.5)
            self._oval = _oval_order(sol.face_mesh.FACEMESH_FACE_OVAL)
        self._prev: np.ndarray | None = None
        self.found_person = False

    def _soft(self, m: np.ndarray, h: int) -> np.ndarray:
        if self.feather > 0:
            s = self.feather * h / 480.0
            m = cv2.GaussianBlur(m, (0, 0), max(0.5, s))
        return np.clip(m, 0, 1)

    def raw(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = frame.shape[:2]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False
        seg = self._selfie.process(rgb).segmentation_mask
        person = np.zeros((h, w), np.float32) if seg is None else seg.astype(np.float32)
        face = None
        if self._mesh is not None:
            face = np.zeros((h, w), np.float32)
            res = self._mesh.process(rgb)
            for lm in (res.multi_face_landmarks or []):
                pts = np.array([[lm.landmark[i].x * w, lm.landmark[i].y * h] for i in self._oval], np.float32)
                cv2.fillPoly(face, [np.round(pts).astype(np.int32)], 1.0)
        return person, face

    def __call__(self, frame):
        h = frame.shape[0]
        person, face = self.raw(frame)
        cur = np.stack([person] + ([face] if face is not None else []))
        if not self.static and self._prev is not None and self._prev.shape == cur.shape and self.smoothing > 0:
            cur = self.smoothing * self._prev + (1 - self.smoothing) * cur
        self._prev = cur
        p = self._soft(cur[0], h)
        self.found_person = bool((p > 0.5).mean() > 0.01)
        if face is None:
            return np.stack([1 - p, p]).astype(np.float32)
        f = self._soft(cur[1], h)
        return np.stack([(1 - f) * (1 - p), (1 - f) * p, f]).astype(np.float32)

    def reset(self):
        self._prev = None

    def close(self):
        self._selfie.close()
        if self._mesh is not None:
            self._mesh.close()


def make_segmenter(regions: str, static: bool = False, label_map: str | Path | np.ndarray | None = None) -> Segmenter:
    """The segmenter for a region set; a label map (a file or a BGR array) overrides MediaPipe."""
    if regions not in REGION_SETS:
        raise ValueError(f"regions must be one of {tuple(REGION_SETS)}, got {regions!r}")
    if label_map is not None:
        if regions == "none":
            raise ValueError("a label map needs --regions person or portrait")
        return LabelMapSegmenter(label_map, REGION_SETS[regions])
    if regions == "none":
        return WholeFrameSegmenter()
    return MediaPipeSegmenter(regions, static=static)
