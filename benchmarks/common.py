"""What every benchmark records with its results: the machine, the versions, the date, the command."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def machine_info() -> dict:
    import torch
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    from engines import memory
    info["malloc"] = memory.state()     # whether malloc kept freed memory, as the CLI has it do
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def write_json(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_clip(path: str | Path, frames: int, longer_side: int) -> list:
    """The first ``frames`` frames of a video, each resized so its longer side is ``longer_side``."""
    import cv2
    from realtime.capture import VideoFileSource
    out = []
    for f, _ in VideoFileSource(path):
        s = longer_side / max(f.shape[:2])
        out.append(cv2.resize(f, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
        if len(out) >= frames:
            break
    return out


def effective_style_masks(smask, min_fraction: float = 0.002):
    """The painting's region masks as the methods use them: a region the painting (almost) lacks
    falls back to the whole painting (``StyleStats``' global fallback), so the judges compare
    that region with the painting's global statistics instead of with an empty Gram matrix.
    ``min_fraction`` is StyleStats.from_features' default."""
    import numpy as np
    m = np.array(smask, dtype=np.float32, copy=True)
    area = m.reshape(m.shape[0], -1).mean(1)
    for k in np.flatnonzero(area < min_fraction):
        m[k] = 1.0
    return m
