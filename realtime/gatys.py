"""The quality reference: image-space optimisation (Gatys et al. 2016), with masks.

Content loss at relu3_1 plus Gram style loss at relu1_1..relu4_1, each Gram
matrix guided by the region masks (spatial control as in Gatys, Ecker, Bethge,
Hertzmann & Shechtman 2017, "Controlling perceptual factors"), optimised over the
pixels with L-BFGS from the content image.  The same encoder as the fast path.

The losses are normalised (content by the content features' energy, each
layer's Gram loss by the style Gram's energy), so the weights do not depend on
the encoder's activation scale: HED's VGG16 is ~10x smaller than ImageNet VGG16's,
and loss weights copied from papers would be meaningless here.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .reconstruct import EPS, check_masks

log = logging.getLogger(__name__)

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu3_1"


def guided_grams(feat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """K x C x C Gram matrices of N=1 features, each weighted by a region mask at the feature's size."""
    f = feat[0].reshape(feat.shape[1], -1)
    m = F.interpolate(masks[None], size=feat.shape[-2:], mode="area")[0].reshape(masks.shape[0], -1)
    n = m.sum(1).clamp_min(EPS)
    return torch.stack([(f * m[k]) @ f.T / n[k] for k in range(m.shape[0])]) / f.shape[0]


def gatys_loss_terms(encoder, x, content_feat, style_grams, masks, style_layers=STYLE_LAYERS):
    taps = encoder(x, taps=tuple(set(style_layers) | {CONTENT_LAYER}))
    c = taps[CONTENT_LAYER]
    content = ((c - content_feat) ** 2).mean() / (content_feat ** 2).mean().clamp_min(EPS)
    style = x.new_zeros(())
    for name in style_layers:
        g = guided_grams(taps[name], masks)
        gs = style_grams[name]
        style = style + ((g - gs) ** 2).sum() / (gs ** 2).sum().clamp_min(EPS)
    return content, style / len(style_layers)


@torch.no_grad()
def style_targets(encoder, style: torch.Tensor, style_masks: torch.Tensor,
                  style_layers=STYLE_LAYERS) -> dict[str, torch.Tensor]:
    """Per style layer, the K x C x C guided Gram matrices of the painting (``style_masks``: K x H x W at its
    size); a region with under 0.2 % of the painting takes the painting's global Gram instead."""
    s_taps = encoder(style, taps=style_layers)
    s_grams = {k: guided_grams(v, style_masks) for k, v in s_taps.items()}
    frac = style_masks.reshape(style_masks.shape[0], -1).mean(1)
    missing = torch.nonzero(frac < 0.002).flatten().tolist()
    if missing:
        whole = torch.ones(1, *style_masks.shape[-2:], device=style_masks.device)
        for name, v in s_taps.items():
            s_grams[name][missing] = guided_grams(v, whole)[0]     # the painting's global Gram, once a layer
    return s_grams


def gatys(encoder, content: torch.Tensor, style: torch.Tensor, content_masks: torch.Tensor | None = None,
          style_masks: torch.Tensor | None = None, *, iterations: int = 500, style_weight: float = 5.0,
          progress: bool = True) -> torch.Tensor:
    """Stylise ``content`` (1x3xHxW BGR [0,1]) towards ``style`` with L-BFGS; returns 1x3xHxW in [0,1].

    ``encoder`` must reach relu4_1.  Masks: K x H x W soft regions (K equal for both), or None.
    """
    if content.dim() != 4 or content.shape[0] != 1 or style.dim() != 4 or style.shape[0] != 1:
        raise ValueError("gatys expects 1 x 3 x H x W content and style images")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    H, W = content.shape[-2:]
    cm = torch.ones(1, H, W) if content_masks is None else check_masks(content_masks, (H, W), "content masks")
    sm = torch.ones(1, *style.shape[-2:]) if style_masks is None else \
        check_masks(style_masks, tuple(style.shape[-2:]), "style masks")
    if cm.shape[0] != sm.shape[0]:
        raise ValueError(f"content has {cm.shape[0]} regions, style has {sm.shape[0]}")
    with torch.no_grad():
        c_feat = encoder(content, taps=(CONTENT_LAYER,))[CONTENT_LAYER]
    s_grams = style_targets(encoder, style, sm)
    x = content.detach().contiguous().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iterations, max_eval=int(iterations * 1.25) + 1,
                            tolerance_grad=0, tolerance_change=0, history_size=50, line_search_fn="strong_wolfe")
    bar = tqdm(total=iterations, desc="gatys (L-BFGS)", unit="it", disable=not progress, leave=False)
    last = {}

    def closure():
        opt.zero_grad()
        cl, sl = gatys_loss_terms(encoder, x, c_feat, s_grams, cm)
        loss = cl + style_weight * sl
        loss.backward()
        last.update(content=float(cl.detach()), style=float(sl.detach()))
        n = opt.state[opt._params[0]].get("n_iter", 0)
        if n > bar.n:
            bar.update(min(n, iterations) - bar.n)
            bar.set_postfix(content=f"{last['content']:.3g}", style=f"{last['style']:.3g}")
        return loss

    if iterations:
        opt.step(closure)
    bar.close()
    log.info("gatys finished: content loss %.4g, style loss %.4g", last.get("content", 0), last.get("style", 0))
    return x.detach().clamp(0, 1)
