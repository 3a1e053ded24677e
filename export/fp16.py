"""FP16 safety: the largest activation anywhere inside the encoder (and the decoder fed its
features), measured on real images.  FP16 overflows at 65504; export refuses FP16 when the
measured peak, times a safety factor, would overflow.

    python -m export.fp16 DIR [--out export/activation_range.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

FP16_MAX = 65504.0
SAFETY = 4.0                      # unseen images may be brighter / more textured than the sample
RANGE_FILE = Path(__file__).resolve().parent / "activation_range.json"


@torch.no_grad()
def peak_activations(module: torch.nn.Module, inputs) -> float:
    """max |activation| over every Conv2d output of ``module`` for all ``inputs``."""
    peak = [0.0]

    def hook(_m, _i, out):
        peak[0] = max(peak[0], float(out.detach().abs().max()))
    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        for x in inputs:
            y = module(x)
            peak[0] = max(peak[0], float(y.abs().max()))
    finally:
        for h in hs:
            h.remove()
    return peak[0]


def fp16_safe(peak: float) -> bool:
    return peak * SAFETY < FP16_MAX


def recorded_range() -> dict:
    return json.loads(RANGE_FILE.read_text()) if RANGE_FILE.exists() else {}


def check_fp16(module: torch.nn.Module, what: str, layer: str, decoder_path=None, encoder=None) -> float:
    """The peak activation of ``module`` (the encoder, or the decoder in ``decoder_path``): the one
    recorded in activation_range.json when it was measured on this very network (the encoder's weights
    id, the decoder file's sha256), else measured here on the export's parity images. ValueError when,
    with the safety factor, it overflows FP16 -- for every FP16 export, the export command's and the live
    command's alike. (The record was trusted by file name: a retrained decoder, or an encoder of other
    weights -- ImageNet VGG's activations are ~10x HED's -- passed on another network's figure.)
    ``encoder``: for a decoder, the encoder it is fed by, whose features of the parity images it is
    measured on (default: the HED encoder's)."""
    from engines.weights import sha256_file
    from .onnx_export import parity_inputs
    rec = recorded_range()
    if what == "encoder":
        key = f"encoder_{layer}"
        same = getattr(module, "encoder_id", None) is not None and module.encoder_id == rec.get("encoder_id")
    else:
        key = Path(decoder_path).stem if decoder_path else None
        same = key is not None and Path(decoder_path).is_file() \
            and rec.get("sha256", {}).get(key) == sha256_file(decoder_path)
    peak = rec.get(key) if same else None
    if peak is None:
        dev = next(module.parameters()).device
        if what == "decoder" and encoder is not None:
            edev = next(encoder.parameters()).device
            with torch.no_grad():
                inputs = [encoder(x.to(edev)).to(dev) for x in parity_inputs("encoder", layer)]
        else:
            inputs = [x.to(dev) for x in parity_inputs(what, layer)]
        peak = peak_activations(module, inputs)
    if not fp16_safe(peak):
        raise ValueError(f"refusing FP16: {what} {layer} activations reach {peak:.0f}; with a safety "
                         f"factor of {SAFETY} that overflows FP16 ({FP16_MAX:.0f})")
    return peak


@torch.no_grad()
def measure(folder: str, max_images: int = 200, max_side: int = 1024, progress: bool = False) -> dict:
    from engines.decoder import load_decoder, shipped_decoder_files
    from engines.weights import build_encoder, load_encoder_weights
    from realtime.images import bgr_to_tensor, read_image
    from training.data import list_images
    from tqdm import tqdm
    ew = load_encoder_weights(None)
    files = list_images(folder)[:max_images]
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    imgs = []
    for f in tqdm(files, desc="reading", unit="image", disable=not progress, leave=False):
        im = read_image(f)
        s = min(1.0, max_side / max(im.shape[:2]))
        imgs.append(bgr_to_tensor(cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)))
    from engines.weights import sha256_file
    res = {"images": len(imgs), "folder": str(folder), "max_side": max_side, "date": time.strftime("%Y-%m-%d"),
           "fp16_max": FP16_MAX, "safety": SAFETY}
    decoders = {layer: [p for p in shipped_decoder_files(layer) if p.exists()] for layer in ("relu3_1", "relu4_1")}
    # what each figure was measured on: the record is trusted only for these very networks (check_fp16)
    res["encoder_id"] = ew.encoder_id
    res["sha256"] = {p.stem: sha256_file(p) for ps in decoders.values() for p in ps}
    bar = tqdm(total=sum((2 + len(d)) * len(imgs) for d in decoders.values()), desc="measuring", unit="pass",
               disable=not progress)

    def counted(xs):
        for x in xs:
            yield x
            bar.update(1)
    for layer in ("relu3_1", "relu4_1"):
        enc = build_encoder(layer, ew)
        res[f"encoder_{layer}"] = peak_activations(enc, counted(imgs))
        feats = [enc(x) for x in counted(imgs)]
        res[f"tap_{layer}"] = max(float(f.max()) for f in feats)
        for p in decoders[layer]:
            res[p.stem] = peak_activations(load_decoder(p), counted(feats))
    bar.close()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="images to measure on (the record's were 120 of the training paintings)")
    p.add_argument("--max-images", type=int, default=200, help="images at most (default %(default)s)")
    p.add_argument("--out", default=str(RANGE_FILE), help="the record to write (default: export/activation_range.json)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    a = p.parse_args(argv)
    if not Path(a.folder).is_dir():
        p.error(f"{a.folder}: no such folder")
    if a.max_images < 1:
        p.error("--max-images must be at least 1")
    from realtime.output import check_writable
    try:
        check_writable(a.out, "image")
    except ValueError as e:
        p.error(str(e))
    if a.threads:
        torch.set_num_threads(a.threads)
    res = measure(a.folder, a.max_images, progress=True)
    from realtime.images import atomic_path
    with atomic_path(a.out, ".json.tmp") as tmp:
        tmp.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
