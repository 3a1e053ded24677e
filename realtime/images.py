"""Image I/O and conversions at the boundaries (frames are H x W x 3 uint8 BGR numpy)."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def to_bgr_uint8(img: np.ndarray) -> np.ndarray:
    """Grayscale, BGRA and 16-bit (or float) images to H x W x 3 uint8 BGR. Transparency is flattened
    onto white, as an image viewer shows it (the colours under transparent pixels are often black or
    leftovers, which would otherwise count as the painting's or the frame's)."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(img).__name__}")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float32)
        img = np.clip(f * (255.0 if f.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        a = img[..., 3:4]
        if (a < 255).any():
            af = a.astype(np.float32) / 255.0
            img = (img[..., :3].astype(np.float32) * af + 255.0 * (1.0 - af) + 0.5).astype(np.uint8)
        else:
            img = img[..., :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2BGR)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"cannot interpret an image of shape {img.shape}")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read any image OpenCV can decode as H x W x 3 uint8 BGR, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, expected an image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise ValueError(f"cannot read an image from {path} (empty, truncated or not an image)")
    # IMREAD_UNCHANGED (for alpha and 16 bits) ignores the EXIF orientation that phones write: applied here
    return upright(to_bgr_uint8(img), exif_orientation(data))


def exif_orientation(data: np.ndarray) -> int:
    """The EXIF orientation tag (0x0112) of an encoded image, 1 (as stored) when it has none or it cannot
    be read. Pillow (a torchvision dependency) reads the header only."""
    try:
        import io

        from PIL import Image
        with Image.open(io.BytesIO(data.tobytes())) as im:
            value = int(im.getexif().get(0x0112, 1))
    except Exception:           # no Pillow, a format it does not know, a damaged EXIF block: as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned as EXIF ``orientation`` says a viewer shows them (the TIFF/EXIF
    convention, as Pillow's ImageOps.exif_transpose, which the tests compare with)."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
              5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
              7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}.get(orientation)
    return np.ascontiguousarray(turned(img)) if turned else img


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file onto ``path`` with ordinary permissions (mkstemp makes
    files readable by their owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    for attempt in range(10):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            # Windows refuses to replace a file another program has open (a player, OBS's media source, a
            # virus scanner) -- often for a moment: a second of retries
            if os.name != "nt" or attempt == 9:
                raise
            time.sleep(0.1)


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in ``path``'s folder (created if need be), named after ``path`` and
    hidden, to be renamed onto it once complete (publish) -- the same file system, so the rename is atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=suffix)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary file's path in ``path``'s folder (created if need be) to write ``path``'s
    content to; when the block ends it is renamed onto ``path`` (publish), and if the block raises it
    is removed -- never a half-written file under the requested name."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: str | Path, img: np.ndarray) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise ValueError(f"cannot encode an image as {ext!r} for {path}")
    with atomic_path(path, ext) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


def bgr_to_tensor(img: np.ndarray, device="cpu") -> torch.Tensor:
    """H x W x 3 uint8 BGR -> 1 x 3 x H x W float BGR [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_bgr(x: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W float BGR [0, 1] -> H x W x 3 uint8 BGR."""
    return (x[0].detach().float().clamp(0, 1).mul(255).add_(0.5)).byte().permute(1, 2, 0).cpu().numpy()


MIN_SIDE = 16      # the smallest processing size a side may have (--size, and fit_size's floor)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'WxH' -> (W, H); '512' -> longer side 512 (returned as (512, 0))."""
    if text in (None, "", "native"):
        return None
    t = str(text).lower().replace("*", "x")
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x"))
        else:
            w, h = int(t), 0
    except ValueError:
        raise ValueError(f"size must look like WxH (e.g. 640x360) or one number for the longer side, got {text!r}")
    if w < MIN_SIDE or (h and h < MIN_SIDE) or w > 8192 or h > 8192:
        raise ValueError(f"size {text!r} is out of range: each side must be between {MIN_SIDE} and 8192 pixels")
    return w, h


def fit_size(h: int, w: int, size: tuple[int, int] | None) -> tuple[int, int]:
    """Target (H, W) for an image of h x w given a parsed --size (None: unchanged)."""
    if size is None:
        return h, w
    W, H = size
    if H == 0:  # longer side
        s = W / max(h, w)
        return max(MIN_SIDE, round(h * s)), max(MIN_SIDE, round(w * s))
    return H, W


def keep_colors(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Luminance-only transfer (Gatys et al. 2016, 'Preserving color'): Y from the stylised
    image, chroma from the original."""
    a = cv2.cvtColor(stylized, cv2.COLOR_BGR2YCrCb)
    b = cv2.cvtColor(original, cv2.COLOR_BGR2YCrCb)
    b[..., 0] = a[..., 0]
    return cv2.cvtColor(b, cv2.COLOR_YCrCb2BGR)
