"""The Stylizer: frame + regions -> stylised frame.  The one object the CLI, the
live loop, tests and benchmarks all drive.

It owns the encoder and decoder, the StyleBank, and the temporal state (content
statistics smoothed over frames, the warm start of the iterative modes, a reset
on a scene cut).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from engines.memory import check_processing_size

from .deflicker import Deflicker, TorchDeflicker
from .images import bgr_to_tensor, fit_size, keep_colors, tensor_to_bgr
from .reconstruct import LINEAR_ITERATION_MAX_STRENGTH, MODES, ReconState, linear_iteration_converges, reconstruct

log = logging.getLogger(__name__)


# a processing size whose short side is below this keeps little detail (a 4000x200 panorama reduced to
# 640x32 has a relu3_1 map 8 cells high): said once, when the size is set
MIN_DETAIL_SIDE = 64


def processing_size(height: int, width: int, size: tuple[int, int] | None, max_side: int) -> tuple[int, int]:
    """The (height, width) a frame is stylized at: ``size`` (W, H; H=0: the longer side) when given, else
    the frame's own, reduced to ``max_side`` on its longer side when larger (StylizerConfig)."""
    if size is not None:
        return fit_size(height, width, size)
    return fit_size(height, width, (max_side, 0)) if max(height, width) > max_side else (height, width)


@dataclass(frozen=True)
class StylizerConfig:
    layer: str = "relu3_1"
    mode: str = "adain"
    strength: float = 1.0
    keep_colors: bool = False
    size: tuple[int, int] | None = None      # processing size (W, H); H=0: longer side W
    max_side: int = 640                      # with size None: frames larger than this are downscaled
    iterations: int | None = None            # linear: paper's N iterations instead of the exact form
    momentum: float = 0.6                    # temporal smoothing of content statistics (video)
    scene_cut: float = 40.0                  # mean abs grey-level change that resets the state
    deflicker: float = 0.0                   # video: blend with the motion-compensated previous output (0 = off)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if not 0 <= self.deflicker < 1:
            raise ValueError(f"deflicker must be in [0, 1), got {self.deflicker}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass
class StageTimes:
    """Wall milliseconds per stage of the last frame.  ``sync``: a callable run before each reading
    (``torch.cuda.synchronize`` for benchmarks on a GPU, where work is asynchronous and a stage's
    time would otherwise show up in whichever later stage first waits for the GPU)."""
    ms: dict = field(default_factory=dict)
    sync: object = None

    def add(self, name: str, t0: float) -> float:
        if self.sync is not None:
            self.sync()
        t = time.perf_counter()
        self.ms[name] = (t - t0) * 1000.0
        return t


class Stylizer:
    def __init__(self, config: StylizerConfig, encoder, decoder, bank, device="cpu"):
        dec_layer = getattr(decoder, "layer", None) or getattr(decoder, "meta", {}).get("layer")
        if dec_layer not in (None, config.layer):
            raise ValueError(f"decoder is for {dec_layer}, config asks for {config.layer}")
        self.config, self.encoder, self.decoder, self.bank = config, encoder, decoder, bank
        self.device = torch.device(device)
        self.state = ReconState(momentum=config.momentum)
        self._last_small: np.ndarray | None = None
        self._checked_size: tuple[int, int] | None = None
        self._told_linear = False
        self.times = StageTimes()
        self._style_index = None
        self._deflicker: Deflicker | TorchDeflicker | None = None
        # on a GPU the deflicker works on the decoder's output where it is (TorchDeflicker); on the
        # CPU, OpenCV's version on the 8-bit image is several times faster than torch's grid_sample
        self._deflicker_kind = TorchDeflicker if self.device.type == "cuda" else Deflicker

    def reset(self) -> None:
        self.state.reset()
        self._last_small = None
        if self._deflicker is not None:
            self._deflicker.reset()

    def _scene_cut(self, frame: np.ndarray) -> bool:
        small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        cut = self._last_small is not None and float(np.abs(small - self._last_small).mean()) > self.config.scene_cut
        self._last_small = small
        return cut

    @torch.no_grad()
    def stylize(self, frame: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
        """``frame``: H x W x 3 uint8 BGR; ``regions``: K x H x W soft masks (or None: one region).
        Returns the stylised frame at the input's size."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be an H x W x 3 uint8 BGR array, got "
                             f"{getattr(frame, 'shape', None)} {getattr(frame, 'dtype', type(frame).__name__)}")
        cfg = self.config
        t = time.perf_counter()
        if self._style_index != self.bank.index:     # a style switch is a scene cut for the statistics
            self.reset()
            self._style_index = self.bank.index
        if self._scene_cut(frame):
            log.debug("scene cut: temporal state reset")
            self.reset()
        H, W = frame.shape[:2]
        ph, pw = processing_size(H, W, cfg.size, cfg.max_side)
        if (ph, pw) != self._checked_size:             # a new processing size: does it fit in memory?
            check_processing_size(ph, pw, self.device)
            if min(ph, pw) < MIN_DETAIL_SIDE:
                log.warning("processing at %dx%d: with a short side under %d px little detail survives "
                            "(--size WxH sets a larger processing size)", pw, ph, MIN_DETAIL_SIDE)
            self._checked_size = (ph, pw)
        small = frame if (ph, pw) == (H, W) else cv2.resize(frame, (pw, ph), interpolation=cv2.INTER_AREA)
        x = bgr_to_tensor(small, self.device)
        if cfg.deflicker > 0 and (self._deflicker is None or self._deflicker.strength != cfg.deflicker):
            self._deflicker = self._deflicker_kind(cfg.deflicker)     # the config can be replaced live
        if cfg.deflicker > 0 and self.device.type == "cuda":
            self._deflicker.start(small)            # its optical flow, on the CPU, while the GPU works
        t = self.times.add("prepare", t)
        feat = self.encoder(x)
        t = self.times.add("encoder", t)
        wc = None
        if regions is not None:
            # uploaded at the frame's size; reconstruct area-averages them to the features' size and
            # checks them there, on the device.  (Session 8 moved both to the CPU before the upload, a
            # sixteenth of the bytes; on the H100 in session 9 that put the CPU's area average, 2 ms
            # a 720p frame, on the frame's path: 9.6 ms a frame against 7.6, so it was undone.)
            wc = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32)).to(self.device)
        # floor=0: encoder features come out of a ReLU, so they are never negative, and the decoder
        # never saw a negative input in training; but a mean shift (linear) or a whitening-colouring
        # (wct) pushes some below zero.  Decoded as they are, they made flat grey patches (README
        # grid, linear mode, on hair); clamped, the patches are gone and adain barely changes.  On a
        # GPU the fused op clamps in its second pass, saving a pass over the features.
        iterations = cfg.iterations
        if cfg.mode == "linear" and iterations is not None and not linear_iteration_converges(cfg.strength):
            # the paper's iteration diverges from strength 0.5 on (a live + or m got here): the exact form,
            # its limit, instead of a frame of NaN or an error that ends the stream
            if not self._told_linear:
                log.warning("strength %.2f: the paper's linear iteration diverges from %.1f on; the exact "
                            "closed form is used there", cfg.strength, LINEAR_ITERATION_MAX_STRENGTH)
                self._told_linear = True
            iterations = None
        out = reconstruct(feat, wc, self.bank.current.stats, cfg.mode, cfg.strength,
                          iterations=iterations, state=self.state, floor=0.0)
        t = self.times.add("reconstruct", t)
        y = self.decoder(out)[..., :ph, :pw]   # ceil-mode pooling: odd sizes come back slightly larger
        t = self.times.add("decoder", t)
        if cfg.deflicker > 0 and self.device.type == "cuda":
            y = self._deflicker(small, x, y)
        img = tensor_to_bgr(y)
        if cfg.deflicker > 0 and self.device.type != "cuda":
            img = self._deflicker(small, img)       # before keep_colors, as on the GPU
        if cfg.keep_colors:
            img = keep_colors(img, small)
        if (ph, pw) != (H, W):
            img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR if ph < H else cv2.INTER_AREA)
        self.times.add("composite", t)
        return img
