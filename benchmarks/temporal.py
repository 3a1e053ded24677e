"""Flicker: the warping error of Lai et al. 2018 ("Learning blind video temporal consistency").

    python benchmarks/temporal.py [CLIP] [--frames 48] [--size 480] [--json out.json] [--quick]

Optical flow is computed on consecutive INPUT frames with OpenCV's DIS flow; pixels that fail
a forward-backward check are occluded and left out; E = mean over frames of the masked mean of
||O_t - warp(O_{t-1})||^2 (images in [0, 1]).  The stylised clip is measured with the temporal
state (smoothed masks and statistics, warm start) and without it (every frame on its own),
next to the input clip's own error, and with the output deflicker (realtime/deflicker.py) at the
strengths of --deflicker.  On the bundled demo clip the motion is known exactly
(``demo_clip_motion.json``), so the error is also given with the exact flow -- an independent check
for the deflicker, which warps with a DIS flow of its own.  Sharpness (mean Sobel gradient) says
how much texture each clip keeps: a filter that only blurred would also lower the warping error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import apply_quick, check_outputs, int_at_least, load_clip, machine_info, write_json  # noqa: E402


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow from frame a to frame b (a(x) ~ b(x + flow(x)))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), None)


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def occlusion_free(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Forward-backward consistency (Sundaram et al. 2010, as used by Lai et al. 2018)."""
    bw_at = warp(bw, fw)
    s = fw + bw_at
    lhs = (s ** 2).sum(-1)
    rhs = 0.01 * ((fw ** 2).sum(-1) + (bw_at ** 2).sum(-1)) + 0.5
    h, w = fw.shape[:2]
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    inside = (gx + fw[..., 0] >= 0) & (gx + fw[..., 0] <= w - 1) & (gy + fw[..., 1] >= 0) & (gy + fw[..., 1] <= h - 1)
    return (lhs < rhs) & inside


def flows_from_frames(frames: list) -> list:
    """For t >= 1: (flow t -> t-1, valid mask)."""
    out = []
    for t in range(1, len(frames)):
        fw = dis_flow(frames[t], frames[t - 1])
        bw = dis_flow(frames[t - 1], frames[t])
        out.append((fw, occlusion_free(fw, bw)))
    return out


def flows_from_affines(affines: list, shape: tuple) -> list:
    """Exact flow t -> t-1 from known 2x3 affine camera motions (frame = A_t applied to the scene)."""
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([gx, gy, np.ones_like(gx)], -1)
    out = []
    for t in range(1, len(affines)):
        A0 = np.vstack([affines[t - 1], [0, 0, 1]])
        A1 = np.vstack([affines[t], [0, 0, 1]])
        rel = A0 @ np.linalg.inv(A1)                      # frame t coords -> frame t-1 coords
        q = pts @ rel.T
        flow = (q[..., :2] - pts[..., :2]).astype(np.float32)
        valid = (q[..., 0] >= 0) & (q[..., 0] <= w - 1) & (q[..., 1] >= 0) & (q[..., 1] <= h - 1)
        out.append((flow, valid))
    return out


def warping_error(outputs: list, flows: list) -> float:
    errs = []
    for t in range(1, len(outputs)):
        flow, valid = flows[t - 1]
        prev = outputs[t - 1].astype(np.float32) / 255
        cur = outputs[t].astype(np.float32) / 255
        d = ((cur - warp(prev, flow)) ** 2).sum(-1)
        errs.append(float(d[valid].mean()) if valid.any() else 0.0)
    return float(np.mean(errs))


def sharpness(imgs: list) -> float:
    """Mean gradient magnitude (Sobel, grey levels): how much texture a clip's frames keep."""
    vals = []
    for im in imgs:
        g = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(np.float32)
        vals.append(float(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).mean()))
    return float(np.mean(vals))


def deflicker_cost(frames: list, outs: list, heights=(360, 720), strength: float = 0.5) -> dict:
    """Median milliseconds of one Deflicker call (after the first, which only stores), at each
    height (frames and outputs resized to it)."""
    import time
    from realtime.deflicker import Deflicker
    res = {}
    for h in heights:
        w = round(frames[0].shape[1] * h / frames[0].shape[0])
        fr = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames]
        ou = [cv2.resize(o, (w, h), interpolation=cv2.INTER_LINEAR) for o in outs]
        d, ts = Deflicker(strength), []
        for f, o in zip(fr, ou):
            t = time.perf_counter()
            d(f, o)
            ts.append((time.perf_counter() - t) * 1000)
        res[f"{w}x{h}"] = float(np.median(ts[1:]))
    return res


def stylize_clip(frames: list, warm: bool, layer: str, mode: str, regions: str, deflicker: float = 0.0) -> list:
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from realtime.cli import DEMO_STYLE
    from realtime.segment import make_segmenter
    from realtime.style import StyleBank
    from realtime.stylizer import Stylizer, StylizerConfig
    ew = load_encoder_weights(None)
    enc = build_encoder(layer, ew)
    dec = load_decoder(weights_dir() / f"decoder_{layer}.pt", encoder_id=ew.encoder_id)
    bank = StyleBank(enc, regions)
    bank.add(DEMO_STYLE)
    st = Stylizer(StylizerConfig(layer=layer, mode=mode, momentum=0.6 if warm else 0.0,
                                 iterations=None, deflicker=deflicker), enc, dec, bank)
    seg = make_segmenter(regions, static=not warm)
    outs = []
    for f in frames:
        if not warm:
            st.reset()
        outs.append(st.stylize(f, seg(f)))
    seg.close()
    return outs


def main(argv=None) -> int:
    from realtime.cli import DEMO_CLIP
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip", nargs="?", default=str(DEMO_CLIP))
    p.add_argument("--frames", type=int_at_least(2), default=48)
    p.add_argument("--size", type=int_at_least(16), default=480, help="longer side of the processed frames")
    p.add_argument("--layer", default="relu3_1")
    p.add_argument("--modes", default="adain,linear")
    p.add_argument("--regions", default="portrait")
    p.add_argument("--deflicker", default="0.6",
                   help="comma-separated deflicker strengths to measure too (with the temporal state on; '' for none)")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 4 frames at 160 px, one mode (sets --frames, --size, --modes unless given)")
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    try:
        [float(d) for d in a.deflicker.split(",") if d.strip()]
    except ValueError:
        p.error(f"--deflicker takes strengths separated by commas, got {a.deflicker!r}")
    if a.quick:
        apply_quick(p, a, argv, frames=4, size=160, modes="adain")
    frames = load_clip(a.clip, a.frames, a.size)
    flows = flows_from_frames(frames)
    exact = None
    motion = Path(a.clip).with_name(Path(a.clip).stem + "_motion.json")
    if motion.exists():
        s = a.size / max(cv2.VideoCapture(a.clip).read()[1].shape[:2])
        S = np.diag([s, s, 1.0])
        aff = [(S @ np.vstack([np.array(m), [0, 0, 1]]))[:2] for m in json.loads(motion.read_text())["affine_2x3"]]
        exact = flows_from_affines(aff[: len(frames)], frames[0].shape[:2])
    res = {"clip": str(a.clip), "frames": len(frames), "size": list(frames[0].shape[:2]),
           "input": {"dis": warping_error(frames, flows)}, "methods": {}}
    if exact:
        res["input"]["exact"] = warping_error(frames, exact)
    res["input"]["sharpness"] = sharpness(frames)
    runs = [(True, 0.0), (False, 0.0)] + [(True, float(d)) for d in a.deflicker.split(",") if d.strip()]
    for mode in a.modes.split(","):
        for warm, defl in runs:
            outs = stylize_clip(frames, warm, a.layer, mode, a.regions, defl)
            key = f"{mode}/{'warm' if warm else 'cold'}" + (f"+deflicker{defl:g}" if defl else "")
            res["methods"][key] = {"dis": warping_error(outs, flows), "sharpness": sharpness(outs)}
            if exact:
                res["methods"][key]["exact"] = warping_error(outs, exact)
            print(key, res["methods"][key], flush=True)
            if warm and not defl and "deflicker_ms" not in res:
                res["deflicker_ms"] = deflicker_cost(frames, outs)
    info = machine_info(argv, __file__)
    res["machine"] = info
    print("\n| clip | method | warping error (DIS flow) | warping error (exact flow) | sharpness |\n|---|---|---|---|---|")
    print(f"| {Path(a.clip).name} | input | {res['input']['dis']:.5f} | {res['input'].get('exact', float('nan')):.5f} "
          f"| {res['input']['sharpness']:.1f} |")
    for k, v in res["methods"].items():
        print(f"| {Path(a.clip).name} | {k} | {v['dis']:.5f} | {v.get('exact', float('nan')):.5f} | {v['sharpness']:.1f} |")
    if "deflicker_ms" in res:
        print("\ndeflicker (strength 0.5), median ms per frame: " +
              ", ".join(f"{k}: {v:.1f}" for k, v in res["deflicker_ms"].items()))
    print(f"\nmachine: {info['cpu']} ({info['cores']} cores), {info['date']}; {len(frames)} frames at "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}")
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
