"""Frame sinks: a window, a video file, an image or a folder of images, a virtual camera.

Each has ``send(frame)`` and ``close()`` and is a context manager.  Files are
written to a temporary name and renamed on ``close()``, so an interrupted run
never leaves a half-written output under the requested name.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .images import publish, temp_beside, write_image

from .resource import Resource

log = logging.getLogger(__name__)

VIDEO_OUT = {".mp4": "mp4v", ".avi": "MJPG"}
IMAGE_OUT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class OutputError(OSError):
    """An output that could not be written (no permission, a full disk, a codec OpenCV lacks): the CLI
    reports it in one line and exits 1."""


def os_reason(e: BaseException) -> str:
    """An OSError's reason without the temporary file's name it may carry (``[Errno 13] Permission
    denied: '/x/.out.png.a1b2.png'`` -> ``Permission denied``); other errors as they are."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


class FrameSink(Resource):
    _told_size = False             # said once that frames changed size (fit_to)

    def send(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def fit_to(self, frame: np.ndarray, size: tuple[int, int], what: str) -> np.ndarray:
        """``frame`` as is when it has this output's ``size`` (W, H), else letterboxed into it (fit_frame),
        with one warning for the whole run: an output opened at the first frame's size keeps it."""
        if (frame.shape[1], frame.shape[0]) == tuple(size):
            return frame
        if not self._told_size:
            log.warning("frames changed size to %dx%d: %s keeps its first size, %dx%d (letterboxed)",
                        frame.shape[1], frame.shape[0], what, *size)
            self._told_size = True
        return fit_frame(frame, size)


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` (W, H) with its aspect kept, centred on black: a camera that changes
    resolution mid-stream (a reconnect at another default) is neither squashed nor refused by an output
    opened at the first size."""
    w, h = size
    fh, fw = frame.shape[:2]
    s = min(w / fw, h / fh)
    nw, nh = max(1, min(w, round(fw * s))), max(1, min(h, round(fh * s)))
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out


class VideoFileSink(FrameSink):
    """A video file at ``fps``. Frames from a live source come with their capture time (``send(frame,
    t_ms)``): each is held and written into every slot of the file from its own capture time until the
    next frame's (the last one once), so a recording plays at real speed however slowly it was stylized
    (a camera's 30 fps stamped on 2 stylized frames a second played 15x too fast). Frames of a file or a
    folder are written once each."""
    timed = True
    MAX_GAP_S = 60.0             # a longer pause (a stalled loop, Ctrl-Z) is shortened to this in the file

    def __init__(self, path: str | Path, fps: float = 30.0):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in VIDEO_OUT:
            raise ValueError(f"video output must end in {' or '.join(VIDEO_OUT)}, got {self.path}")
        try:       # the file stays open across frames, so not atomic_path's with-block: its first half
            tmp = temp_beside(self.path, ext)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {os_reason(e)}") from e
        self.tmp, self.fps, self.writer, self.frames = tmp, float(fps), None, 0
        self.sent, self.t0, self.held = 0, None, None

    def send(self, frame, t_ms: float | None = None):
        self.sent += 1
        frame = self._prepare(frame)
        if t_ms is None:
            self._write(frame, 1)
            return
        if self.t0 is None:
            self.t0 = t_ms
        slot = int(round((t_ms - self.t0) * self.fps / 1000.0))       # this frame's first slot in the file
        if self.held is not None:
            gap = slot - self.frames                                   # slots the held frame fills
            cap = int(self.MAX_GAP_S * self.fps)
            if gap > cap:                  # the file skips the rest of the pause, and later frames follow on
                self.t0 += (gap - cap) * 1000.0 / self.fps
                gap = cap
            self._write(self.held, gap)    # < 1: stylized faster than the file's rate, the held one dropped
        self.held = frame.copy()           # the loop may hand over a buffer it reuses for the next frame

    def _prepare(self, frame):
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*VIDEO_OUT[self.path.suffix.lower()]),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise OutputError(f"OpenCV cannot write {self.path.suffix} video here ({self.path})")
            self.size = (w, h)
        return self.fit_to(frame, self.size, str(self.path))

    def _write(self, frame, times: int) -> None:
        for _ in range(max(0, times)):
            self.writer.write(frame)
        self.frames += max(0, times)

    def close(self):
        if self.held is not None and self.writer is not None:
            self._write(self.held, 1)          # the last live frame: one slot
            self.held = None
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            try:
                publish(self.tmp, self.path)
            except PermissionError as e:     # a recording is not thrown away: say where it is
                raise PermissionError(e.errno, f"{e.strerror}; the finished video is kept as {self.tmp}",
                                      str(self.path)) from None
            log.info("wrote %d frames to %s%s", self.frames, self.path,
                     f" ({self.sent} stylized, at the capture's pace)" if self.sent != self.frames else "")
        else:
            self.tmp.unlink(missing_ok=True)


class ImageSink(FrameSink):
    """One image (the last frame sent)."""

    def __init__(self, path: str | Path):
        self.path, self.last = Path(path), None

    def send(self, frame):
        self.last = frame

    def close(self):
        if self.last is not None:
            write_image(self.path, self.last)
            log.info("wrote %s", self.path)
            self.last = None


class FolderSink(FrameSink):
    def __init__(self, folder: str | Path, ext: str = ".png"):
        self.path, self.ext, self.n = Path(folder), ext, 0
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write to the folder {self.path}: {os_reason(e)}") from e

    def send(self, frame):
        write_image(self.path / f"frame_{self.n:06d}{self.ext}", frame)
        self.n += 1

    def close(self):
        """The folder then holds this run's frames only: frames an earlier, longer run left beyond them
        (our own frame_NNNNNN names, nothing else) are removed, so that the folder is not a mix of two runs.
        A run that wrote no frame (stopped before its first) leaves the folder as it was."""
        if self.n == 0:
            return
        stale = [f for f in self.path.glob(f"frame_*{self.ext}") if is_frame_name(f.name, self.ext)
                 and int(f.stem[6:]) >= self.n]
        for f in stale:
            f.unlink(missing_ok=True)
        log.info("wrote %d frame(s) to %s%s", self.n, self.path,
                 f" (removed {len(stale)} frame(s) of an earlier run)" if stale else "")


def is_frame_name(name: str, ext: str | None = None) -> bool:
    """Whether ``name`` is one of FolderSink's own file names, frame_NNNNNN.png/.jpg."""
    stem, dot, suffix = name.partition(".")
    return (len(stem) == 12 and stem.startswith("frame_") and stem[6:].isdigit()
            and ("." + suffix if dot else "") in ((ext,) if ext else (".png", ".jpg")))


class WindowSink(FrameSink):
    """An OpenCV window; ``last_key`` holds the key pressed after the latest frame (or -1)."""

    def __init__(self, title: str = "stylecam"):
        # X11/Wayland only: Windows and macOS (Cocoa) need neither variable
        if (sys.platform not in ("win32", "darwin") and not os.environ.get("DISPLAY")
                and not os.environ.get("WAYLAND_DISPLAY")):
            raise RuntimeError("no display for a window (DISPLAY is not set); use --no-window with --out or --vcam")
        self.title, self.last_key, self._seen = title, -1, False
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def send(self, frame):
        cv2.imshow(self.title, frame)
        self.last_key = cv2.waitKey(1) & 0xFF
        # the window's close button: quit, as q does (imshow would reopen it). Only once the window has
        # been seen visible: GTK builds answer -1 (unsupported) always; not on macOS, whose OpenCV windows
        # have no close button and read 0 when minimised
        if sys.platform != "darwin":
            try:
                visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
            except cv2.error:
                visible = -1
            if visible >= 1:
                self._seen = True
            elif self._seen:
                self.last_key = ord("q")

    def close(self):
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class NullSink(FrameSink):
    """Discards frames (benchmarks, dry runs); counts them."""

    def __init__(self):
        self.frames = 0

    def send(self, frame):
        self.frames += 1


def vcam_backend_hint() -> str:
    if sys.platform.startswith("linux"):
        # exclusive_caps=1: browsers (a video call in Chrome or Firefox) list the device only with it
        return ("install and load v4l2loopback (sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                "card_label=stylecam)")
    if sys.platform == "darwin":
        return ("install OBS Studio and start its Virtual Camera once (that installs the system extension), "
                "then stop it: it takes one sender at a time")
    return ("install OBS Studio (28 or later: its virtual camera comes with it); stop OBS's own Virtual "
            "Camera while stylecam sends to it: it takes one sender at a time")


class VirtualCamSink(FrameSink):
    """pyvirtualcam (OBS virtual camera, v4l2loopback, ...), opened at the first frame's size."""

    def __init__(self, fps: float = 30.0):
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError as e:
            raise RuntimeError('--vcam needs pyvirtualcam: pip install -e ".[vcam]" in the project '
                               '(pip install "stylecam[vcam]" where stylecam is installed as a package)') from e
        self.fps, self.cam = fps, None

    def send(self, frame):
        import pyvirtualcam
        if self.cam is None:
            h, w = frame.shape[:2]
            try:
                self.cam = pyvirtualcam.Camera(w, h, self.fps, fmt=pyvirtualcam.PixelFormat.BGR)
            except RuntimeError as e:
                raise RuntimeError(f"no virtual camera device ({e}); {vcam_backend_hint()}") from e
            log.info("virtual camera: %s", self.cam.device)
        # the device keeps its size; a frame of another would fail every send
        self.cam.send(self.fit_to(frame, (self.cam.width, self.cam.height), "the virtual camera"))
        self.cam.sleep_until_next_frame()

    def close(self):
        if self.cam is not None:
            self.cam.close()
            self.cam = None


def output_kind(path: str | Path, many_frames: bool) -> str:
    """``"video"``, ``"image"`` or ``"folder"`` for an output path, or ValueError for one that cannot
    take the source's frames. Cheap, so the CLI checks ``--out`` before it loads any network."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext in VIDEO_OUT:
        return "video"
    if ext in IMAGE_OUT:
        if many_frames:
            raise ValueError(f"{p} is one image but the source has many frames: give a .mp4/.avi or a folder")
        return "image"
    if ext:
        raise ValueError(f"unknown output type {ext!r}: use .mp4/.avi, .png/.jpg, or a folder")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{p} exists and is not a folder: give a .mp4/.avi, a .png/.jpg, or a folder")
    return "folder"


def same_file(a, b) -> bool:
    """Whether two existing paths are one file: the name compared as the file system does (macOS's and
    Windows' disks ignore case: --out Clip.mp4 is --source clip.mp4) and hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str | Path, kind: str, inputs: tuple = ()) -> None:
    """ValueError when the output ``path`` (of output_kind ``kind``) cannot be written, found before any
    network loads: its folder (a folder output: itself), or the nearest part of it that exists, must be
    a folder this process may create files in; and it must not be one of ``inputs`` (the source, the
    paintings), which it would overwrite. Cheap; what it cannot foresee (a full disk, a file system
    that refuses) is reported when writing, as OutputError."""
    p = Path(path).absolute()
    if kind != "folder" and p.is_dir():
        raise ValueError(f"{path} is a folder: give a file name ending in .mp4/.avi or .png/.jpg")
    for i in inputs:
        if i is not None and Path(i).exists() and same_file(i, p):
            raise ValueError(f"--out {path} is also an input (--source or --style): it would be overwritten")
        # a folder output writes (and trims) frame_NNNNNN files: inputs of that name in it would be lost
        if (kind == "folder" and i is not None and Path(i).is_file() and is_frame_name(Path(i).name)
                and Path(i).resolve().parent == p.resolve()):
            raise ValueError(f"--out {path} holds input frames ({Path(i).name}): they would be overwritten; "
                             "give another folder")
    folder = p if kind == "folder" else p.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"cannot write {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: no permission to create files in {probe}")
    try:          # what access() cannot tell: a read-only mount, /sys or /proc (root passes access() there)
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".stylecam-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {path}: cannot create files in {probe} ({os_reason(e)})") from None


def sink_for_path(path: str | Path, fps: float, many_frames: bool) -> FrameSink:
    """``.mp4``/``.avi`` -> video; ``.png``/``.jpg`` -> one image; anything else -> a folder of images."""
    kind = output_kind(path, many_frames)
    if kind == "video":
        return VideoFileSink(path, fps)
    return ImageSink(path) if kind == "image" else FolderSink(path)
