"""What every benchmark records with its results: the machine, the versions, the date, the command."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def int_at_least(lo: int):
    """An argparse type: a whole number >= ``lo`` (a clear one-line error otherwise, not a traceback
    or a silently wrong run)."""
    import argparse

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {v}")
        return v
    parse.__name__ = f"whole number >= {lo}"
    return parse


def int_list(lo: int = 16):
    """An argparse type: comma-separated whole numbers, each >= ``lo`` (sizes: '240,480,720')."""
    import argparse
    one = int_at_least(lo)

    def parse(text: str) -> list[int]:
        vals = [one(v) for v in text.split(",") if v.strip()]
        if not vals:
            raise argparse.ArgumentTypeError("expected comma-separated whole numbers")
        return vals
    parse.__name__ = "list of whole numbers"
    return parse


def check_outputs(parser, *paths) -> None:
    """Before any work: each output file (a --json, a --png; None skipped) must be writable, so that a
    long benchmark does not end by losing its results (realtime.output.check_writable)."""
    from realtime.output import check_writable
    for path in paths:
        if path:
            try:
                check_writable(path, "image")
            except ValueError as e:
                parser.error(str(e))


def check_decoder(parser, spec: str | None, layer: str) -> str | None:
    """--decoder as the CLI takes it (None/auto, small, wide, or a file: engines.decoder.resolve_decoder),
    refused in one line before any work when it names nothing; returned as given."""
    if spec is None:
        return None
    from engines.decoder import resolve_decoder
    try:
        path = resolve_decoder(spec, layer)
    except FileNotFoundError as e:
        parser.error(str(e))
    if not path.is_file():
        parser.error(f"--decoder {spec}: no such file")
    return spec


def apply_quick(parser, args, argv=None, **values) -> None:
    """--quick: set ``values`` on ``args`` (a smoke test's small sizes), except those options the command
    line gave itself -- an explicit ``--size 480 --quick`` keeps 480, and says so, rather than being
    overridden without a word."""
    from realtime.argtools import explicit_options
    given = explicit_options(parser, argv)
    for dest, value in values.items():
        if dest in given:
            print(f"--quick: keeping the given --{dest.replace('_', '-')} {getattr(args, dest)}", file=sys.stderr)
        else:
            setattr(args, dest, value)


def command_line(argv=None, script: str | None = None) -> str:
    """The command that ran, as a person would type it again from the project's root:
    ``python benchmarks/fps.py --quick`` (the script's path relative to the root where it lies inside)."""
    import shlex
    path = Path(script or sys.argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return shlex.join(["python", shown] + list(sys.argv[1:] if argv is None else argv))


def machine_info(argv=None, script: str | None = None) -> dict:
    """The machine's record; ``argv``/``script`` name the command when main() was called with its own
    argument list (tests, other scripts) rather than from the command line."""
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
            "date": time.strftime("%Y-%m-%d"), "time": time.strftime("%H:%M:%S %Z"),
            "command": command_line(argv, script)}
    for mod in ("onnxruntime", "onnx", "cv2", "mediapipe"):      # the runtimes a CPU figure depends on
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
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
