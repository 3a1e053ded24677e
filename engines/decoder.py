"""The decoder g: features at one VGG layer -> image (Lu et al. 2017, §3.2).

It mirrors the encoder up to its layer (the shape Universal Style Transfer's
decoders use, Li et al. 2017), with nearest-neighbour upsampling followed by a
convolution (no transposed convolutions, so no checkerboard; Odena et al.
2016) and zero padding (reflection padding has been troublesome in TensorRT;
zero padding exports to every backend as a plain Conv).  The input is divided by
a fixed per-channel feature scale measured on training data, because raw VGG
activations on 0-255 inputs are large and training is unstable without it.

Output: N x 3 x H x W, BGR, nominally [0, 1] (the project convention); callers
clamp.  ``width`` scales the channel counts of the high-resolution stages,
which dominate the cost on a CPU.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .vgg import ARCHS, LAYER_CHANNELS, LAYERS, WIDTHS

DECODER_FORMAT = "stylecam-decoder-v1"


def _plan(layer: str, arch: str, width: float) -> list[tuple[str, int, int]]:
    """(kind, cin, cout) steps mirroring the encoder from ``layer`` back to pixels."""
    last = LAYERS.index(layer)
    w = [max(8, int(round(c * width))) if b < last else c for b, c in enumerate(WIDTHS)]
    steps: list[tuple[str, int, int]] = []
    cin = LAYER_CHANNELS[layer]
    for b in range(last, -1, -1):
        n = ARCHS[arch][b] if b < last else 1  # the tap block only ran its first conv
        if b == 0:
            n -= 1  # conv1_1's mirror is the output conv
        for i in range(n):
            # the mirror of a block's first conv maps back to the previous block's width
            cout = w[b - 1] if (i == n - 1 and b > 0) else w[b]
            steps.append(("conv", cin, cout))
            cin = cout
        if b > 0:
            steps.append(("up", cin, cin))
    steps.append(("out", cin, 3))
    return steps


class Decoder(nn.Module):
    def __init__(self, layer: str = "relu3_1", arch: str = "vgg16", width: float = 1.0, centre: bool = False,
                 extra: int = 0, dilations=None):
        super().__init__()
        if layer not in LAYERS[:4]:
            raise ValueError(f"decoders exist for {LAYERS[:4]}, got {layer!r}")
        if int(extra) != extra or extra < 0:
            raise ValueError(f"extra convolutions must be a whole number >= 0, got {extra!r}")
        self.layer, self.arch, self.width, self.centre = layer, arch, float(width), bool(centre)
        # extra: that many more 3x3 convolutions (+ ReLU) right after the first one, at the features'
        # own resolution and the first convolution's width -- more depth and context where the decoder
        # decides regional tone, at a sixteenth of a full-resolution convolution's cost per channel pair
        # for relu3_1 (training/deepen.py adds them to a trained decoder without changing its output)
        self.extra = int(extra)
        # dilations: one per extra convolution (default all 1).  A dilated 3x3 convolution (Yu & Koltun
        # 2016, "Multi-scale context aggregation by dilated convolutions") widens what each output pixel
        # sees by 2*d feature cells for the same cost; its identity start is the same centre tap
        raw = tuple(dilations) if dilations is not None else (1,) * self.extra
        if len(raw) != self.extra or any(int(x) != x or x < 1 for x in raw):
            raise ValueError(f"dilations must be {self.extra} whole numbers >= 1 (one per extra convolution), "
                             f"got {dilations!r}")
        self.dilations = tuple(int(x) for x in raw)
        c = LAYER_CHANNELS[layer]
        self.register_buffer("feat_scale", torch.ones(1, c, 1, 1))
        # centre: a per-channel mean subtracted before the scale (LeCun et al. 1998, "Efficient
        # BackProp": centred inputs), for decoders trained with train_decoder --centre-input; the
        # shipped ones have none (no buffer, no extra operation in their exported graphs)
        if self.centre:
            self.register_buffer("feat_mean", torch.zeros(1, c, 1, 1))
        layers: list[nn.Module] = []
        for i, (kind, cin, cout) in enumerate(_plan(layer, arch, width)):
            if kind == "up":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            elif kind == "conv":
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                if i == 0:
                    for d in self.dilations:
                        layers += [nn.Conv2d(cout, cout, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            else:
                layers.append(nn.Conv2d(cin, cout, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.in_channels = c

    def normalise_input(self, feat: torch.Tensor) -> torch.Tensor:
        """What the first convolution sees: the features (less their per-channel mean, for a centred
        decoder) over their per-channel scale (benchmarks/dormant.py reads it too, so that a change
        here reaches both)."""
        return ((feat - self.feat_mean) if self.centre else feat) / self.feat_scale

    def forward(self, feat: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        if feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f"decoder for {self.layer} expects N x {self.in_channels} x h x w features, "
                             f"got {tuple(feat.shape)}")
        y = self.net(self.normalise_input(feat))
        if out_size is not None and tuple(y.shape[-2:]) != tuple(out_size):
            # the encoder pools in ceil mode, so odd sizes come back up to 2 px larger: crop
            y = y[..., : out_size[0], : out_size[1]]
        return y

    def config(self) -> dict:
        cfg = {"layer": self.layer, "arch": self.arch, "width": self.width}
        if self.centre:
            cfg["centre"] = True
        if self.extra:
            cfg["extra"] = self.extra
        if any(d != 1 for d in self.dilations):
            cfg["dilations"] = list(self.dilations)
        return cfg                      # shipped files' configs unchanged: none of these keys when not used


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_decoder(dec: Decoder, path: Path, *, encoder_id: str, meta: dict | None = None,
                 fp16: bool = True) -> str:
    """Write a shippable decoder file (FP16 storage) atomically; returns its content digest."""
    from .weights import atomic_torch_save
    # CPU tensors whatever the decoder's device: a file written after GPU training must load anywhere;
    # contiguous whatever layout it trained in (train_decoder --channels-last)
    state = {k: (v.half() if fp16 and v.is_floating_point() and k not in ("feat_scale", "feat_mean") else v.float()).detach().cpu()
             .contiguous() for k, v in dec.state_dict().items()}
    digest = state_digest(state)
    atomic_torch_save({"format": DECODER_FORMAT, "config": dec.config(), "encoder_id": encoder_id,
                       "state_dict": state, "sha256": digest, "meta": meta or {}}, Path(path))
    return digest


# Whether CUDA devices default to the full-width ``decoder_LAYER_wide.pt`` where one ships.  It was
# True from session 6 to 19, while the wide decoder reconstructed better (25.51 dB held out against
# the half-width one's 25.19); False since session 20, when the half-width one with its four extra
# convolutions, trained 7 more minutes on an H100, reached 27.01 dB (weights/README.md): better and
# cheaper, so it is the default everywhere (27.57 dB since session 22).  Set it back when a wide
# decoder wins again.
WIDE_ON_CUDA = False


def default_decoder_path(layer: str, device="cpu") -> Path:
    """The decoder the CLI loads when --decoder is not given: ``decoder_LAYER.pt`` (half width) --
    on a CUDA device the full-width ``decoder_LAYER_wide.pt`` instead where one ships and
    WIDE_ON_CUDA is set (about 2.6x the decoder's arithmetic: cheap on a GPU, but on the CPU it
    would take a 512-px still from 0.65 to 0.95 s with ONNX Runtime; weights/README.md)."""
    small, wide = shipped_decoder_files(layer)
    return wide if WIDE_ON_CUDA and torch.device(device).type == "cuda" and wide.is_file() else small


def shipped_decoder_files(layer: str | None = None) -> list[Path]:
    """The decoder files the project ships for ``layer`` (all layers: None), half width then full width
    (weights/decoder_LAYER.pt, decoder_LAYER_wide.pt; not every one exists): what the CLI loads, and what
    training must not overwrite -- a run writes its decoder at every checkpoint, so it would replace a
    shipped one with a half-trained one."""
    from .weights import weights_dir
    layers = (layer,) if layer else ("relu3_1", "relu4_1")
    return [weights_dir() / f"decoder_{lay}{kind}.pt" for lay in layers for kind in ("", "_wide")]


def resolve_decoder(spec: str | Path | None, layer: str, device="cpu") -> Path:
    """What ``--decoder`` names: nothing or ``auto`` (the default for the device, above), ``small`` /
    ``wide`` (the shipped half- / full-width decoder of the layer), or a file."""
    from .weights import weights_dir
    if spec is None or str(spec) == "auto":
        return default_decoder_path(layer, device)
    if str(spec) in ("small", "wide"):
        path = weights_dir() / f"decoder_{layer}{'_wide' if str(spec) == 'wide' else ''}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no {spec} {layer} decoder ships ({path} is missing)"
                                    + ("; the wide one exists for relu3_1 only" if str(spec) == "wide" else ""))
        return path
    return Path(spec)


def load_decoder(path: str | Path, *, encoder_id: str | None = None, device="cpu") -> Decoder:
    """Load a decoder file, checking its content digest and (optionally) the encoder it was trained for."""
    from .weights import WeightsError
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"decoder weights: {path} is a folder; give a decoder file (weights/decoder_LAYER.pt) "
                                "or auto, small, wide")
    if not path.is_file():
        raise FileNotFoundError(f"decoder weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a stylecam decoder file (PyTorch cannot read it: "
                           f"{type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != DECODER_FORMAT:
        raise WeightsError(f"{path} is not a stylecam decoder file")
    state = obj["state_dict"]
    if state_digest(state) != obj.get("sha256"):
        raise WeightsError(f"{path} is corrupt or was modified: its tensors do not match the recorded sha256")
    if encoder_id is not None and obj.get("encoder_id") != encoder_id:
        raise WeightsError(f"{path} was trained for encoder {obj.get('encoder_id')!r}, not {encoder_id!r}; "
                           f"train a decoder for these encoder weights (python -m training.train_decoder)")
    dec = Decoder(**obj["config"])
    dec.load_state_dict({k: v.float() for k, v in state.items()})
    dec.meta = obj.get("meta", {})
    dec.encoder_id = obj.get("encoder_id")
    return dec.eval().to(device)
