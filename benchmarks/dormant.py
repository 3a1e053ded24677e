"""Dead channels in the decoders: for each hidden convolution, how many of its ReLU channels are
(almost) never active on real photos.  A dead channel passes no gradient to its weights, so training
never brings it back (training/revive.py gives such channels fresh weights).

    python benchmarks/dormant.py [--decoder FILE ...] [--holdout | --photos DIR] [--tau 1e-3] [--json out.json]

A channel's score is its mean |activation| over the photos divided by the mean over its layer's
channels (ReDo's score, Sokar et al. 2023); it is counted dormant when the score is at most --tau.
Each photo is encoded whole with its shorter side at 256 px.  For the first convolution it also
reports the mean and the spread (over pixels) of the pre-activations of dormant and live channels:
its inputs (non-negative ReLU features) have a large common mean, so a shift of a channel's weights
moves every pixel's pre-activation together.  FILE is a shipped decoder (weights/*.pt)
or a training checkpoint (runs/*/checkpoint.pt).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import check_outputs, int_at_least, machine_info, write_json  # noqa: E402
from engines.decoder import Decoder, load_decoder  # noqa: E402
from engines.weights import build_encoder, load_encoder_weights, weights_dir  # noqa: E402
from realtime.images import bgr_to_tensor, read_image  # noqa: E402
from training.data import DEFAULT_DATA  # noqa: E402
from training.revive import _convs, channel_scores, photo_features  # noqa: E402


def load_any(path: Path, ew) -> Decoder:
    """A shipped decoder file or a training checkpoint, as a Decoder in eval mode."""
    from training.train_decoder import decoder_from_checkpoint, read_checkpoint
    try:
        return load_decoder(path, encoder_id=ew.encoder_id).float().eval()
    except (ValueError, KeyError, RuntimeError) as first:
        try:
            ck = read_checkpoint(path)
        except (FileNotFoundError, ValueError):
            raise SystemExit(f"{path}: neither a decoder file nor a training checkpoint ({first})")
        return decoder_from_checkpoint(ck, ew.arch).eval()


def measure(f: Path, ew, encoders: dict, a) -> dict:
    """One decoder's counts (and the first convolution's pre-activation figures), printed and returned."""
    dec = load_any(f, ew)
    if dec.layer not in encoders:
        encoders[dec.layer] = build_encoder(dec.layer, ew)
    enc = encoders[dec.layer]
    if a.holdout:
        from benchmarks.autoencoder import holdout_files
        imgs = []
        for h in holdout_files():
            img = read_image(h)
            s = 256 / min(img.shape[:2])
            imgs.append(cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                   interpolation=cv2.INTER_AREA))
        feats = [enc(bgr_to_tensor(img)) for img in imgs]
    else:
        feats = list(photo_features(enc, a.photos, a.images))
    scores = channel_scores(dec, feats)
    convs = _convs(dec)
    # the first convolution's pre-activations in units of their spread over the pixels: a channel
    # dies when its mean (the part every pixel shares) sinks below zero by more than its spread
    xs = [dec.normalise_input(f) for f in feats]
    pre = torch.cat([convs[0](x).flatten(2)[0] for x in xs], 1).double()
    x = torch.cat([x.flatten(2)[0] for x in xs], 1).double()
    mu, sd = pre.mean(1), pre.std(1)
    is_dead = scores[0] <= a.tau
    first = {"input_mean_over_rms": float(x.mean() / x.pow(2).mean().sqrt())}
    for name, sel in (("dormant", is_dead), ("live", ~is_dead)):
        if bool(sel.any()):
            first[name] = {"pre_mean": float(mu[sel].mean()), "pre_std": float(sd[sel].mean()),
                           "mean_over_std": float((mu[sel] / sd[sel].clamp_min(1e-12)).mean())}
    layers = [{"conv": k, "in": convs[k].in_channels, "channels": convs[k].out_channels,
               "dormant": int((s <= a.tau).sum()), "zero": int((s == 0).sum())} for k, s in enumerate(scores)]
    row = {"decoder": str(f), "layer": dec.layer, "width": dec.width, "images": len(feats), "convs": layers,
           "first_conv": first}
    print(f"{f} ({dec.layer}, width {dec.width}, {len(feats)} photos): " + ", ".join(
        f"conv {r['conv']} {r['dormant']}/{r['channels']}" for r in layers) + f" dormant (score <= {a.tau:g})")
    print("  first conv, pre-activation mean / spread over pixels: " + ", ".join(
        f"{k} {v['pre_mean']:.2f} / {v['pre_std']:.2f} ({v['mean_over_std']:+.1f})"
        for k, v in first.items() if isinstance(v, dict)) +
          f"; its input's mean is {first['input_mean_over_rms']:.2f} of its RMS")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder", nargs="+", default=None,
                   help="decoder files or training checkpoints (default: the three shipped decoders)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--holdout", action="store_true", help="the 16 held-out portraits instead of training photos")
    src.add_argument("--photos", default=str(DEFAULT_DATA / "photos"), help="folder of photos (default: training)")
    p.add_argument("--images", type=int_at_least(1), default=32, help="photos drawn from --photos (default 32)")
    p.add_argument("--tau", type=float, default=1e-3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    check_outputs(p, a.json)
    files = [Path(f) for f in (a.decoder or [weights_dir() / n for n in
                                             ("decoder_relu3_1_wide.pt", "decoder_relu3_1.pt", "decoder_relu4_1.pt")])]
    for f in files:
        if not f.is_file():
            p.error(f"decoder not found: {f}")
    ew = load_encoder_weights(None)
    encoders: dict = {}
    with torch.no_grad():           # a context, not set_grad_enabled: main() runs inside the tests' process
        rows = [measure(f, ew, encoders, a) for f in files]
    if a.json:
        write_json(a.json, {"machine": machine_info(argv, __file__), "tau": a.tau,
                            "photos": "held-out portraits" if a.holdout else a.photos, "decoders": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
