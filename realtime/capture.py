"""Frame sources: a camera (threaded, newest frame only), a video file, a folder/glob of images, one image.

Each yields ``(frame, t_ms)`` with frames as H x W x 3 uint8 BGR.
"""
from __future__ import annotations

import glob
import logging
import threading
import time
from pathlib import Path

import cv2

from .images import read_image, to_bgr_uint8

from .resource import Resource

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"}


class SourceError(RuntimeError):
    """A source that cannot be opened or read."""


class FrameSource(Resource):
    fps: float = 30.0
    is_live: bool = False

    def __iter__(self):
        raise NotImplementedError


class ImageSource(FrameSource):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.frame = read_image(self.path)
        self.frame_hw = self.frame.shape[:2]

    def __iter__(self):
        yield self.frame, 0.0


class ImageFolderSource(FrameSource):
    """Every image of a folder or glob, in name order; none dropped."""

    def __init__(self, spec: str | Path, fps: float = 30.0):
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files = sorted(Path(f) for f in glob.glob(str(spec)) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images found in {spec}")
        self.files, self.fps = files, fps

    def __iter__(self):
        for i, f in enumerate(self.files):
            try:
                img = read_image(f)
            except ValueError as e:
                log.warning("skipping %s", e)
                continue
            yield img, i * 1000.0 / self.fps


class VideoFileSource(FrameSource):
    """A video file read in order with no frame dropped; a truncated file ends at its last good frame."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video not found: {self.path}")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise SourceError(f"cannot open video {self.path} (not a video, or a codec OpenCV lacks)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        if self.fps > 240:
            self.fps = 30.0
        self.expected = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # the frames' size as the container states it (None where it does not): checked before networks load
        h, w = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0), int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.frame_hw = (h, w) if h > 0 and w > 0 else None

    def __iter__(self):
        n = 0
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                break
            yield to_bgr_uint8(frame), n * 1000.0 / self.fps
            n += 1
        if n == 0:
            raise SourceError(f"{self.path} has no readable frame (empty or truncated)")
        if self.expected and n < self.expected - 1:
            log.warning("%s: stopped after %d of %d frames (truncated or damaged file)", self.path, n, self.expected)

    def close(self):
        self.cap.release()


class CameraSource(FrameSource):
    """A camera read in a thread that keeps only the newest frame (avatarify-style), so a slow
    stylizer never builds a backlog.  A lost camera is reopened a few times, then the stream ends."""
    is_live = True
    backoff_s = 0.5              # the n-th reconnect attempt waits n times this (5 attempts: 7.5 s in all)

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None,
                 reconnects: int = 5, open_fn=cv2.VideoCapture):
        self.index, self.reconnects, self.open_fn = index, reconnects, open_fn
        self.width, self.height = width, height
        self.cap = self._open()
        if self.cap is None:
            import sys
            extra = (" (on macOS: allow the terminal the camera in System Settings > Privacy & Security > Camera)"
                     if sys.platform == "darwin" else "")
            raise SourceError(f"no camera at index {index}; use --source FILE (a video or images) or --demo{extra}")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        self._frame, self._t, self._seq = None, 0.0, 0
        self.gave_up = False         # the camera was lost and did not come back (the run then fails)
        self._cond = threading.Condition()
        self._stop = False
        self._lost = False
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _open(self):
        # OpenCV's backends print their own warnings when an index has no camera (V4L2's "can't open camera
        # by index", Orbbec's "Camera index out of range"); our one-line error says it. Shown with --verbose.
        quiet = not log.isEnabledFor(logging.DEBUG) and hasattr(cv2, "setLogLevel")
        level = cv2.setLogLevel(0) if quiet else None          # 0: silent; returns the previous level
        try:
            cap = self.open_fn(self.index)
        finally:
            if quiet:
                cv2.setLogLevel(level)
        if cap is None or not cap.isOpened():
            return None
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def _run(self):
        t0 = time.perf_counter()
        tries = 0
        while not self._stop:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                tries += 1
                if tries > self.reconnects:
                    log.error("camera %s lost; giving up after %d reconnect attempts", self.index, self.reconnects)
                    self.gave_up = True
                    break
                log.warning("camera %s lost; reconnecting (%d/%d)", self.index, tries, self.reconnects)
                self.cap.release()
                time.sleep(self.backoff_s * tries)
                cap = self._open()
                if cap is not None:
                    self.cap = cap
                continue
            tries = 0
            with self._cond:
                self._frame, self._t = frame, (time.perf_counter() - t0) * 1000.0
                self._seq += 1
                self._cond.notify_all()
        with self._cond:
            self._lost = True
            self._cond.notify_all()

    def __iter__(self):
        seen = 0
        while True:
            with self._cond:
                while self._seq == seen and not self._lost and not self._stop:
                    self._cond.wait(timeout=1.0)
                if self._seq == seen:
                    return
                frame, t, seen = self._frame, self._t, self._seq
            yield to_bgr_uint8(frame), t

    def close(self):
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.cap.release()


def open_source(spec: str | int) -> FrameSource:
    """Camera index, video file, folder or glob of images, or one image."""
    s = str(spec)
    if s.isdigit():
        return CameraSource(int(s))
    p = Path(s)
    if p.is_dir() or (not p.exists() and any(c in s for c in "*?[")):    # "clip [1080p].mp4" is a file
        return ImageFolderSource(s)
    if not p.exists():
        raise FileNotFoundError(f"source not found: {s} (give a camera index, a video, an image or a folder)")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(p)
    return VideoFileSource(p)
