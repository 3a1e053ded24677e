"""The loop: source -> segmenter -> stylizer -> sinks, with per-stage timings,
an FPS overlay and hotkeys in the window, and a clean shutdown that finalises
every output whatever happens.

Hotkeys (window): q/Esc quit · n/p next/previous style · m next mode ·
+/- strength · Space effect on/off · c keep colours on/off · r reset temporal
state · s save a snapshot PNG.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .images import write_image
from .output import OutputError, os_reason
from .reconstruct import MODES

log = logging.getLogger(__name__)

STAGES = ("decode", "segment", "prepare", "encoder", "reconstruct", "decoder", "composite", "output")


def draw_overlay(frame: np.ndarray, fps: float, ms: dict, style: str, mode: str, strength: float,
                 effect_on: bool = True, keep_colors: bool = False) -> np.ndarray:
    out = frame.copy()
    state = (f"{style}  {mode} {strength:.2f}" + ("  keep colours" if keep_colors else "")) if effect_on \
        else "effect OFF (Space)"
    lines = [f"{fps:5.1f} FPS  {state}"]
    groups = [" ".join(f"{k[:4]} {ms[k]:.0f}" for k in STAGES[i:i + 4] if k in ms) for i in (0, 4)]
    lines += [g + " ms" for g in groups if g]
    for i, t in enumerate(lines):
        y = 22 + 20 * i
        cv2.putText(out, t, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, t, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Pipeline:
    def __init__(self, source, segmenter, stylizer, sinks=(), window=None, max_frames: int | None = None,
                 snapshot_dir: str | Path = ".", progress: bool = True):
        self.source, self.segmenter, self.stylizer = source, segmenter, stylizer
        self.sinks, self.window = list(sinks), window
        self.max_frames, self.snapshot_dir, self.progress = max_frames, Path(snapshot_dir), progress
        self.frames = 0
        self.bypass = False          # Space: show the input untouched
        self.ms_sum: dict[str, float] = {}
        # `m` cycles the modes; an --iterations given for the starting mode stays with it (gram's 20 descent
        # steps had become 20 steps of linear's iteration instead of its closed form, and linear's 500
        # became 500 gram steps a frame)
        self.mode_iterations = {stylizer.config.mode: stylizer.config.iterations} if stylizer is not None else {}

    def handle_key(self, key: int, frame: np.ndarray) -> bool:
        """Apply a hotkey; False means quit."""
        st = self.stylizer
        if key in (ord("q"), 27):
            return False
        if key == ord("n"):
            log.info("style: %s", st.bank.cycle(1).name)
        elif key == ord(" "):
            self.bypass = not self.bypass
            if not self.bypass:
                st.reset()          # nothing from before the pause (statistics, warm start, deflicker) carries over
            log.info("effect %s", "off" if self.bypass else "on")
        elif key == ord("p"):
            log.info("style: %s", st.bank.cycle(-1).name)
        elif key == ord("m"):
            modes = [m for m in MODES if m != "patchswap"]
            nxt = modes[(modes.index(st.config.mode) + 1) % len(modes)] if st.config.mode in modes else modes[0]
            st.config = dataclasses.replace(st.config, mode=nxt, iterations=self.mode_iterations.get(nxt))
            st.reset()
            log.info("mode: %s", nxt)
        elif key in (ord("+"), ord("=")):
            st.config = dataclasses.replace(st.config, strength=min(1.0, round(st.config.strength + 0.1, 2)))
            log.info("strength: %.1f", st.config.strength)
        elif key in (ord("-"), ord("_")):
            st.config = dataclasses.replace(st.config, strength=max(0.0, round(st.config.strength - 0.1, 2)))
            log.info("strength: %.1f", st.config.strength)
        elif key == ord("c"):
            st.config = dataclasses.replace(st.config, keep_colors=not st.config.keep_colors)
            log.info("keep colours: %s", "on" if st.config.keep_colors else "off")
        elif key == ord("r"):
            st.reset()
            self.segmenter.reset()
            log.info("temporal state reset")
        elif key == ord("s"):
            self.snapshot(frame)
        return True

    def snapshot(self, frame: np.ndarray) -> Path | None:
        """``s``: the stylized frame (no overlay) as a PNG in the snapshot folder, named by the time to the
        millisecond and never over an earlier one; one that cannot be written is a warning, not the end of
        a live session."""
        now = time.time()
        stem = f"stylecam_{time.strftime('%Y%m%d_%H%M%S', time.localtime(now))}_{int(now * 1000) % 1000:03d}"
        path, n = self.snapshot_dir / f"{stem}.png", 1
        while path.exists():
            path, n = self.snapshot_dir / f"{stem}_{n}.png", n + 1
        try:
            written = write_image(path, frame)
        except OSError as e:
            log.warning("snapshot not saved: cannot write %s: %s", path.resolve(), os_reason(e))
            return None
        log.info("snapshot: %s", Path(written).resolve())
        return Path(written)

    def run(self) -> dict:
        recent = deque(maxlen=30)
        bar = tqdm(desc="stylizing", unit="frame", disable=not self.progress, leave=False,
                   total=self.max_frames)
        t_start = time.perf_counter()
        interrupted = False
        # a live source's frames carry their capture time: a video file sink writes them at that pace
        live = bool(getattr(self.source, "is_live", False))
        timed = [live and bool(getattr(s, "timed", False)) for s in self.sinks]   # sinks given capture times
        redirect = logging_redirect_tqdm() if self.progress else contextlib.nullcontext()
        redirect.__enter__()              # log lines above the progress bar, not glued onto its line
        try:
            it = iter(self.source)
            while self.max_frames is None or self.frames < self.max_frames:
                t0 = time.perf_counter()
                try:
                    frame, t_ms = next(it)
                except StopIteration:
                    break
                ms = {"decode": (time.perf_counter() - t0) * 1000}
                t = time.perf_counter()
                if self.bypass:
                    out = frame
                else:
                    regions = self.segmenter(frame)
                    ms["segment"] = (time.perf_counter() - t) * 1000
                    out = self.stylizer.stylize(frame, regions)
                    ms.update(self.stylizer.times.ms)
                t = time.perf_counter()
                for s, with_time in zip(self.sinks, timed):
                    if with_time:
                        s.send(out, t_ms)
                    else:
                        s.send(out)
                keep_going = True
                if self.window is not None:
                    now = time.perf_counter()
                    recent.append(now)
                    fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                    cfg = self.stylizer.config
                    self.window.send(draw_overlay(out, fps, ms, self.stylizer.bank.current.name, cfg.mode,
                                                  cfg.strength, not self.bypass, cfg.keep_colors))
                    if self.window.last_key not in (-1, 255):
                        keep_going = self.handle_key(self.window.last_key, out)
                ms["output"] = (time.perf_counter() - t) * 1000
                for k, v in ms.items():
                    self.ms_sum[k] = self.ms_sum.get(k, 0.0) + v
                self.frames += 1
                bar.update(1)
                if not keep_going:
                    break
        except KeyboardInterrupt:
            log.warning("interrupted: finalising outputs")
            interrupted = True
        finally:
            bar.close()
            redirect.__exit__(None, None, None)
            failed = []
            for s in self.sinks + ([self.window] if self.window is not None else []):
                try:
                    s.close()
                except Exception as e:  # keep closing the others, then say so (below)
                    log.debug("closing %s failed: %r", type(s).__name__, e)
                    failed.append((s, e))
            self.source.close()
            self.segmenter.close()
        if failed:       # an output that could not be finalised is a failed run, not a warning
            s, e = failed[0]
            raise OutputError(f"cannot write {getattr(s, 'path', type(s).__name__)}: {os_reason(e)}") from e
        wall = time.perf_counter() - t_start
        n = max(1, self.frames)
        return {"frames": self.frames, "seconds": wall, "fps": self.frames / wall if wall > 0 else 0.0,
                "ms": {k: v / n for k, v in self.ms_sum.items()}, "interrupted": interrupted}
