"""Output deflicker: blend each stylised frame with the previous OUTPUT, motion-compensated.

The decoder re-synthesises brush texture in every frame, so a stylised clip flickers several times
more than its input (README, Flicker), and smoothing the region statistics cannot remove that.  The
remedy here is the usual post-filter of video style transfer (Lai et al. 2018, "Learning blind video
temporal consistency", use the same warping-and-occlusion model to measure it; Bonneel et al. 2015
filter with it): estimate the motion from the current INPUT frame back to the previous one (OpenCV's
DIS optical flow, the ultrafast preset), warp the previous output along it, and blend it into the
current output where the warped previous input agrees with the current input:

    a(x) = strength * exp(-(e(x) / tol)^2),   e = mean over BGR of |I_t(x) - I_{t-1}(x + flow(x))|
    O'_t = a * O'_{t-1}(x + flow(x)) + (1 - a) * O_t

The filter is recursive (O'_{t-1} is the previous blended output), so in still areas it averages
about (1 + a) / (1 - a) frames; where the flow is wrong or something new appears, e is large and the
current output passes unchanged (no ghosting).  The first frame, a size change or a reset (scene cut,
style switch) start it afresh.
"""
from __future__ import annotations

import cv2
import numpy as np


class Deflicker:
    FLOW_SIDE = 480      # the flow is estimated at most this large (longer side) and scaled up

    def __init__(self, strength: float = 0.6, tol: float = 12.0):
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"deflicker strength must be in [0, 1), got {strength}")
        if tol <= 0:
            raise ValueError(f"deflicker tolerance must be positive, got {tol}")
        self.strength, self.tol = float(strength), float(tol)
        # a(e) for every grey-level difference e = 0..255: one table lookup per pixel
        e = np.arange(256, dtype=np.float32)
        self._lut = (self.strength * np.exp(-(e / self.tol) ** 2)).astype(np.float32)
        self._dis = None
        self._grid = None
        self.reset()

    def reset(self) -> None:
        self._prev_in: np.ndarray | None = None      # previous input, BGR uint8
        self._prev_grey: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None     # previous blended output, BGR uint8

    def flow(self, grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """Flow from the current frame to the previous one: cur(x) ~ prev(x + flow(x)), estimated at
        most FLOW_SIDE large (DIS, ultrafast preset) and scaled up to the frame's size."""
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        h, w = grey.shape
        f = max(1, -(-max(h, w) // self.FLOW_SIDE))          # integer factor, rounded up
        if f == 1:
            return self._dis.calc(grey, prev_grey, None)
        small = (max(1, w // f), max(1, h // f))
        fl = self._dis.calc(cv2.resize(grey, small, interpolation=cv2.INTER_AREA),
                            cv2.resize(prev_grey, small, interpolation=cv2.INTER_AREA), None)
        fl = cv2.resize(fl, (w, h), interpolation=cv2.INTER_LINEAR)
        fl[..., 0] *= w / small[0]
        fl[..., 1] *= h / small[1]
        return fl

    def maps(self, flow: np.ndarray):
        """remap's maps for sampling at x + flow(x), in OpenCV's fixed-point form (made once per frame,
        used for both warps: faster than float maps)."""
        h, w = flow.shape[:2]
        if self._grid is None or self._grid.shape[:2] != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.dstack([gx, gy])
        return cv2.convertMaps(self._grid + flow, None, cv2.CV_16SC2)

    def warp(self, img: np.ndarray, flow_or_maps) -> np.ndarray:
        """``img`` sampled at x + flow(x) (``flow_or_maps``: a flow, or maps() of one)."""
        m1, m2 = self.maps(flow_or_maps) if isinstance(flow_or_maps, np.ndarray) else flow_or_maps
        return cv2.remap(img, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def weights(self, frame: np.ndarray, warped_prev_in: np.ndarray) -> np.ndarray:
        """a(x) of the module doc (e: the mean over BGR of the absolute difference, rounded to a
        grey level), H x W float32."""
        diff = cv2.absdiff(frame, warped_prev_in)
        e = cv2.transform(diff, np.full((1, 3), 1 / 3, np.float32))     # mean over BGR, uint8, saturated
        return cv2.LUT(e, self._lut)

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``frame``: the input the output was made from; ``out``: the stylised frame, same size
        (H x W x 3 uint8 BGR both).  Returns the deflickered output (uint8)."""
        if frame.shape != out.shape or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"deflicker: input and output must be the same H x W x 3 size, got {frame.shape} "
                             f"and {out.shape}")
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if self.strength > 0 and self._prev_out is not None and self._prev_out.shape == out.shape:
            maps = self.maps(self.flow(grey, self._prev_grey))
            a = self.weights(frame, self.warp(self._prev_in, maps))
            res = cv2.blendLinear(self.warp(self._prev_out, maps), out, a, 1.0 - a)
        else:
            res = out.copy()
        self._prev_in, self._prev_grey, self._prev_out = frame.copy(), grey, res
        return res
