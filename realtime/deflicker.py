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


_MEAN_BGR = np.full((1, 3), 1 / 3, np.float32)      # cv2.transform matrix: the mean of the three channels


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

    def small_flow(self, grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """Flow from the current frame to the previous one, cur(x) ~ prev(x + flow(x)), by DIS
        (ultrafast preset) on the pair reduced by an integer factor to at most FLOW_SIDE; in the
        reduced frame's pixels and size."""
        return self.dis(self.reduce(grey), self.reduce(prev_grey))

    def reduce(self, grey: np.ndarray) -> np.ndarray:
        """``grey`` reduced by an integer factor (rounded up) to at most FLOW_SIDE on its longer side."""
        h, w = grey.shape
        f = max(1, -(-max(h, w) // self.FLOW_SIDE))
        return grey if f == 1 else cv2.resize(grey, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)

    def dis(self, grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """DIS flow (ultrafast preset) from ``grey`` to ``prev_grey``, same size, in their pixels."""
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        return self._dis.calc(grey, prev_grey, None)

    def flow(self, grey: np.ndarray, prev_grey: np.ndarray) -> np.ndarray:
        """small_flow() scaled up to the frame's size and pixels."""
        h, w = grey.shape
        fl = self.small_flow(grey, prev_grey)
        if fl.shape[:2] == (h, w):
            return fl
        sh, sw = fl.shape[:2]
        fl = cv2.resize(fl, (w, h), interpolation=cv2.INTER_LINEAR)
        fl[..., 0] *= w / sw
        fl[..., 1] *= h / sh
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
        e = cv2.transform(diff, _MEAN_BGR)                              # mean over BGR, uint8, saturated
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


class TorchDeflicker(Deflicker):
    """The same filter on the networks' device (for CUDA, where the CPU version's warps and blend
    would cost more than the GPU's whole frame): the flow is still DIS on the CPU, on the reduced
    grey pair (FLOW_SIDE 320), uploaded small and scaled up on the device; warping (grid_sample,
    bilinear, border), weights and blend run there, on the decoder's output before it is converted
    to 8 bits.  Tested against ``Deflicker`` (tests/test_deflicker.py).

    The flow needs only the input frames, so ``start(frame)``, called before the networks run,
    computes it on a worker thread while the GPU works (OpenCV releases the GIL; so does torch while
    it waits for the GPU); ``__call__`` then collects it.  On the lent H100 (session 7) the flow
    computed in line made the 720p FP16 frame 17.1 ms instead of 8.5; on the worker (session 8) 10.9
    ms instead of 9.4 (benchmarks/fps.py --deflicker 0.5).  The reduced grey of the
    previous frame is kept, so each frame is reduced once.  Without ``start`` the flow is computed in
    line, with the same result."""
    FLOW_SIDE = 320

    def reset(self) -> None:
        super().reset()
        self._prev_x = None          # previous input, 1 x 3 x H x W in [0, 1] on the device
        self._prev_y = None          # previous blended output, likewise
        self._prev_small = None      # previous input, grey, reduced for the flow
        self._base = None
        job = getattr(self, "_job", None)
        self._job = None             # (frame, future) of start(); a reset forgets it
        if job is not None:
            job[1].cancel() or job[1].exception()      # let a running job finish before it is dropped

    def _flow_job(self, frame: np.ndarray, prev_small):
        """(reduced grey, flow from it to ``prev_small`` or None when there is no previous frame of
        that size).  Runs on the worker thread after start(), in line otherwise."""
        small = self.reduce(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        if self.strength <= 0 or prev_small is None or prev_small.shape != small.shape:
            return small, None
        return small, self.dis(small, prev_small)

    def start(self, frame: np.ndarray) -> None:
        """Begin this frame's flow on the worker thread (``frame``: the input that ``__call__`` will
        be given, the same array)."""
        from concurrent.futures import ThreadPoolExecutor
        if self._job is not None:
            self._job[1].exception()              # one job at a time: the DIS object is not shared
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecam-flow")
        self._job = (frame, self._pool.submit(self._flow_job, frame, self._prev_small))

    def _flow_for(self, frame: np.ndarray):
        job, self._job = self._job, None
        if job is not None:
            if job[0] is frame:
                return job[1].result()
            job[1].exception()                    # started for another frame: wait, then do it here
        return self._flow_job(frame, self._prev_small)

    def _sampling_grid(self, fl_small: np.ndarray, h: int, w: int, device):
        """grid_sample's grid (x + flow(x) in its [-1, 1] coordinates, where -1 and 1 are the centres
        of the corner pixels: align_corners=True).  The flow is scaled to those units on the CPU,
        while it is small, so that each frame uploads one small array and creates nothing else."""
        import torch
        import torch.nn.functional as F
        sh, sw = fl_small.shape[:2]
        units = np.array([w / sw * 2.0 / max(w - 1, 1), h / sh * 2.0 / max(h - 1, 1)], np.float32)
        fl = torch.from_numpy(np.ascontiguousarray(fl_small * units)).to(device).permute(2, 0, 1)[None]
        if (sh, sw) != (h, w):
            fl = F.interpolate(fl, size=(h, w), mode="bilinear", align_corners=False)
        if self._base is None or self._base.shape[1:3] != (h, w) or self._base.device != fl.device:
            gy, gx = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device),
                                    indexing="ij")
            self._base = torch.stack([gx, gy], -1)[None]        # the identity grid, cached per size
        return self._base + fl.permute(0, 2, 3, 1)

    def __call__(self, frame: np.ndarray, x, y):
        """``frame``: the input (H x W x 3 uint8 BGR, on the CPU, for the flow); ``x``: the same
        input as the networks saw it (1 x 3 x H x W in [0, 1], on the device); ``y``: the decoder's
        output (1 x 3 x H x W).  Returns the deflickered output (float32, [0, 1], on the device)."""
        import torch
        import torch.nn.functional as F
        if frame.ndim != 3 or frame.shape[2] != 3 or tuple(x.shape[-2:]) != frame.shape[:2] \
                or tuple(y.shape[-2:]) != frame.shape[:2]:
            raise ValueError(f"deflicker: the frame {frame.shape}, input {tuple(x.shape)} and output {tuple(y.shape)} "
                             f"must have the same H x W")
        small, flow = self._flow_for(frame)
        x = x.float()
        y = y.float().clamp(0, 1)
        if flow is not None and self._prev_y is not None and self._prev_y.shape == y.shape:
            h, w = frame.shape[:2]
            g = self._sampling_grid(flow, h, w, y.device)
            both = F.grid_sample(torch.cat([self._prev_y, self._prev_x], 1), g, mode="bilinear",
                                 padding_mode="border", align_corners=True)
            e = (x - both[:, 3:]).abs().mean(1, keepdim=True) * 255.0
            a = self.strength * torch.exp(-(e / self.tol) ** 2)
            y = torch.lerp(y, both[:, :3], a)
        self._prev_small, self._prev_x, self._prev_y = small, x, y
        return y
