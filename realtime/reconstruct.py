"""Masked feature reconstruction (Lu et al., ICCV 2017, §3.1) and richer modes.

Everything here is a pure tensor function on one feature map ``F`` (C x h x w,
or 1 x C x h x w) and K soft region maps ``W`` (K x h x w, summing to 1 per
pixel).  Statistics are always accumulated in float32, whatever the feature
dtype (VGG activations overflow FP16 once squared).  See
``../shared/design/ALGORITHM.md`` for the maths; in short, for region k:

``linear``    F_o = F_c + a (mu_s - mu_c)        the paper's objective, solved exactly
``adain``     per-channel mean and std matched   (Huang & Belongie 2017)
``wct``       mean and covariance matched        (Li et al. 2017, whitening-colouring)
``gram``      gradient steps on content + Gram loss in feature space (Gatys et al. 2016's
              objective, without back-propagating through the network), warm-startable
``patchswap`` nearest style patch                (Chen & Schmidt 2016), for decoder training

and the output is blended by the content masks, F_o = sum_k W_c^k T_k(F_c), so
region boundaries stay soft.  ``strength`` (alpha in [0, 1]) blends towards the
plain content feature; for ``linear`` it is exactly the paper's alpha.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

MODES = ("linear", "adain", "wct", "gram", "patchswap")
EPS = 1e-5
FP16_MAX = 65504.0
# a region with under this share of a frame's weight is absent from it (ReconState: a region present while
# its row of the state has less than this behind it is appearing; an absent one keeps its warm offset)
PRESENT_FRACTION = 1e-3
# ... and one with at least this share is clearly present: appearing only then (a region hovering about
# PRESENT_FRACTION, a distant face or a segmenter's low-confidence residue, restarted frame after frame)
APPEAR_FRACTION = 5e-3
# a region whose share of a frame and whose mask's peak both fall below this fraction of the (smoothed)
# ones behind its row of the state keeps its row (ReconState.update): it is leaving the frame, its mask
# fading where it was
FADING = 0.75


# --------------------------------------------------------------------------- inputs

def _as_chw(feat: torch.Tensor, what: str = "features") -> torch.Tensor:
    if not isinstance(feat, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(feat).__name__}")
    if feat.dim() == 4:
        if feat.shape[0] != 1:
            raise ValueError(f"{what} must be C x h x w or 1 x C x h x w, got batch {feat.shape[0]}")
        feat = feat[0]
    if feat.dim() != 3:
        raise ValueError(f"{what} must be C x h x w or 1 x C x h x w, got shape {tuple(feat.shape)}")
    if not feat.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {feat.dtype}")
    return feat


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-downsample K x H x W soft masks to ``size`` and renormalise them to sum to 1."""
    masks = masks.float()
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks[None], size=size, mode="area")[0]
    return masks / masks.sum(0, keepdim=True).clamp_min(EPS)


def check_masks(masks: torch.Tensor, size: tuple[int, int], what: str = "masks", with_mass: bool = False):
    """Validate K x H x W soft masks and bring them to the feature ``size`` (float32, renormalised);
    ``with_mass``: also each region's total weight there (a list of K floats, read back with the checks).

    They are area-averaged to ``size`` first and validated there: averaging keeps valid masks valid
    (each cell's weights stay in [0, 1] and still sum to 1) and carries non-finite values through,
    and the checks then read a sixteenth of the values at relu3_1.  A violation confined to a few
    pixels of an otherwise valid cell can average out; masks made by the segmenters are valid by
    construction."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() != 3 or masks.shape[0] < 1:
        raise ValueError(f"{what} must be K x H x W soft region maps, got shape {tuple(masks.shape)}")
    m = masks.float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[None], size=size, mode="area")[0]
    s = m.sum(0)
    # both checks reduced on the masks' device and read back together: one synchronisation per
    # frame on a GPU, not four
    out_of_range = (~torch.isfinite(m)).any() | (m < -1e-6).any() | (m > 1 + 1e-6).any()
    checks = torch.stack([out_of_range.float(), (s - 1).abs().max()])
    read = torch.cat([checks, m.sum((1, 2))] if with_mass else [checks]).tolist()
    bad_range, worst_sum = read[:2]
    if bad_range:
        raise ValueError(f"{what} must hold finite weights in [0, 1]")
    if worst_sum > 1e-3:
        raise ValueError(f"{what} must sum to 1 over the K regions at every pixel "
                         f"(found sums in [{float(s.min()):.3g}, {float(s.max()):.3g}])")
    return (resize_masks(m, size), read[2:]) if with_mass else resize_masks(m, size)


def full_mask(size: tuple[int, int], device=None) -> torch.Tensor:
    return torch.ones(1, *size, device=device)


# --------------------------------------------------------------------------- statistics

@dataclass
class RegionStats:
    """Per-region float32 statistics of a feature map: K regions, C channels."""
    weight: torch.Tensor            # K        sum of mask weights
    mean: torch.Tensor              # K x C
    var: torch.Tensor               # K x C    (weighted, biased)
    cov: torch.Tensor | None = None  # K x C x C (centred)

    @property
    def std(self) -> torch.Tensor:
        return (self.var + EPS).sqrt()

    @property
    def gram(self) -> torch.Tensor:
        """Uncentred second moment E_w[f f^T] = cov + mu mu^T (needs cov)."""
        return self.cov + self.mean[:, :, None] * self.mean[:, None, :]


def stats_from_sums(s1: torch.Tensor, s2: torch.Tensor, wsum: torch.Tensor) -> RegionStats:
    """Mean and (biased) variance from weighted sums: s1 = sum w f, s2 = sum w f^2 (K x C), wsum = sum w (K).

    Shared by ``masked_stats`` and the fused kernel's between-pass solve, which gets
    exactly these sums from its first pass."""
    nz = wsum.clamp_min(EPS)[:, None]
    mean = s1 / nz
    return RegionStats(wsum, mean, (s2 / nz - mean * mean).clamp_min(0))


def masked_stats(feat: torch.Tensor, masks: torch.Tensor, with_cov: bool = False, sums=None) -> RegionStats:
    """Weighted per-region mean, variance (and covariance) of ``feat`` (C x h x w), in float32.
    ``sums``: (s1, s2, wsum) already computed (on a GPU, by the fused kernel's first pass)."""
    f = feat.reshape(feat.shape[0], -1).float()       # C x N
    w = masks.reshape(masks.shape[0], -1).float()     # K x N
    if sums is None:
        sums = (w @ f.T, w @ (f * f).T, w.sum(1))
    n = sums[2]                                       # K
    nz = n.clamp_min(EPS)
    st = stats_from_sums(*sums)
    mean, var = st.mean, st.var
    cov = None
    if with_cov:
        cov = torch.stack([((f * w[k]) @ f.T) / nz[k] - torch.outer(mean[k], mean[k]) for k in range(w.shape[0])])
        cov = 0.5 * (cov + cov.transpose(1, 2))
    return RegionStats(n, mean, var, cov)


@dataclass
class StyleStats:
    """A style's per-region statistics, computed once and reused for every frame.

    A region whose weight in the style is below ``min_fraction`` of the image
    falls back to the style's global statistics (listed in ``fallback``).
    """
    stats: RegionStats
    features: torch.Tensor        # C x h x w (kept for patchswap)
    masks: torch.Tensor           # K x h x w at feature size
    fallback: tuple[int, ...] = ()

    @property
    def num_regions(self) -> int:
        return self.masks.shape[0]

    @functools.cached_property
    def std(self) -> torch.Tensor:
        """The per-region std (``stats.std``), computed once: a style's statistics are fixed when it
        is made, and the fused op would otherwise recompute it (two small launches) every frame."""
        return self.stats.std

    @functools.cached_property
    def cov_sqrt(self) -> torch.Tensor:
        """Each region's C_s^{1/2} (K x C x C, float64), computed once: wct took this eigendecomposition
        again for every region of every frame (10 ms each at relu3_1 on one CPU thread), though it is
        the style's and fixed."""
        return _sqrtm_pair(self.stats.cov, WCT_EPS)[0]

    @functools.cached_property
    def gram_scale(self) -> float:
        """The style's feature scale for gram (the RMS of its Gram diagonal), once per style: it was
        recomputed, and read back from the device, every frame."""
        return float(torch.sqrt(torch.diagonal(self.stats.gram, dim1=1, dim2=2).mean()).clamp_min(EPS))

    @classmethod
    def from_features(cls, feat: torch.Tensor, masks: torch.Tensor | None = None,
                      min_fraction: float = 0.002) -> "StyleStats":
        feat = _as_chw(feat, "style features")
        size = tuple(feat.shape[-2:])
        masks = full_mask(size, feat.device) if masks is None else check_masks(masks, size, "style masks")
        st = masked_stats(feat, masks, with_cov=True)
        glob = masked_stats(feat, full_mask(size, feat.device), with_cov=True)
        total = float(masks.shape[-1] * masks.shape[-2])
        fb = tuple(int(k) for k in torch.nonzero(st.weight < min_fraction * total).flatten())
        for k in fb:
            st.weight[k] = glob.weight[0]
            st.mean[k], st.var[k], st.cov[k] = glob.mean[0], glob.var[0], glob.cov[0]
        return cls(st, feat.detach(), masks, fb)


def weight_share(weight: torch.Tensor) -> torch.Tensor:
    """Each region's share of a frame's weight (K), from the regions' summed weights."""
    return weight / weight.sum().clamp_min(EPS)


@dataclass
class ReconState:
    """What a warm start needs from the previous frame.

    ``momentum`` m smooths the content statistics over time (0 = none): frame t's output uses
    m*previous + (1-m)*current.  The state keeps each region's statistics smoothed by the weight behind
    them: a row mixes in the current frame's in proportion to the region's share of this frame against
    the (smoothed) share behind the row -- for a region of steady size exactly m*previous + (1-m)*current,
    but a region fading out of the frame (a face that left, its mask decaying through the segmenter's
    temporal average over ~15 frames, over whatever is now behind it) adds almost nothing, so the row
    keeps the face's statistics for its return (the plain mix had filled it with the background's, or
    with the zeros of an empty region: the face came back normalised by 0.4-0.54 of its mean, ~5 frames
    to settle).  Fading is told from shrinking by the mask's peak as well: a faded mask loses its peak
    (x0.6 a frame), a face turning or moving away keeps it near 1, and its row follows it as before.  A
    region present in a frame (APPEAR_FRACTION) while its row has (almost) no weight behind it
    (PRESENT_FRACTION) -- a face entering, or back after 9-15 frames away at momentum 0.6 -- makes that
    frame's output start afresh, its own statistics and a cold iteration, as after a scene cut
    (``appearing``); the other regions' rows stay smoothed in the state.  The output of a frame that
    carries uses the plain mix; only the stored rows are weighted.
    ``residual`` is the previous output minus its content (the warm start of the iterative modes);
    ``linear_offset`` the per-region mean offset of the iterative ``linear`` solve, whose rows are kept
    wherever the statistics' are.  ``reset()`` on a scene cut.
    """
    momentum: float = 0.0
    content: RegionStats | None = None
    residual: torch.Tensor | None = None
    linear_offset: torch.Tensor | None = None
    frames: int = 0
    extra: dict = field(default_factory=dict)
    # per region, the share of the frame's weight behind its row of ``content``, smoothed as the rows are:
    # on the statistics' device (for the rows' update, no synchronisation) and as floats (for decisions)
    share: torch.Tensor | None = None
    share_host: list[float] | None = None
    peak: torch.Tensor | None = None       # per region, its mask's largest weight, smoothed likewise
    kept: torch.Tensor | None = None       # this frame's rows kept from the previous ones (K bools, device)

    def __post_init__(self):
        if not 0.0 <= float(self.momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def reset(self) -> None:
        self.content = None
        self.residual = None
        self.linear_offset = None
        self.frames = 0
        self.share = self.share_host = self.peak = self.kept = None
        self.extra.clear()

    def appearing(self, share: list[float] | None) -> bool:
        """Whether a region clearly present this frame (``share``: each region's share of the frame's
        weight; None: not known; at least APPEAR_FRACTION -- a region hovering about PRESENT_FRACTION had
        restarted the frame again and again) has (almost) no weight behind its row of the state."""
        if share is None or self.share_host is None or len(self.share_host) != len(share):
            return False
        return any(s >= APPEAR_FRACTION and h < PRESENT_FRACTION for s, h in zip(share, self.share_host))

    def rows_carry(self, K: int, C: int) -> bool:
        """Whether the state holds statistics of this shape to smooth with (and a momentum)."""
        prev = self.content
        return self.momentum > 0 and prev is not None and tuple(prev.mean.shape) == (K, C)

    def carries(self, K: int, C: int, share: list[float] | None = None) -> bool:
        """Whether this frame's output smooths its statistics with the state's: rows to smooth with, and no
        region appearing."""
        return self.rows_carry(K, C) and not self.appearing(share)

    def warm_offset(self, K: int, C: int, share: list[float] | None = None) -> torch.Tensor | None:
        """The iterative linear form's offset to start from: the previous frame's, unless a region appears."""
        lo = self.linear_offset
        if lo is None or tuple(lo.shape) != (K, C) or self.appearing(share):
            return None
        return lo

    def update(self, cur: RegionStats, share_t: torch.Tensor, share: list[float],
               peak_t: torch.Tensor | None = None, offset: torch.Tensor | None = None) -> None:
        """Store this frame's own statistics ``cur`` into the state (``share_t``/``share``: each region's
        share of the frame's weight, on the device / as floats; ``peak_t``: each region's largest mask
        weight, None: not known): where the state has rows to smooth with, each mixed with this frame's in
        proportion to the weight behind each, kept where the region fades (its share and its peak below
        FADING of the row's), taken from this frame where the region appears; else as they are.
        ``offset``: the iterative form's new offset, kept where the rows are (``new_offset``). All on the
        statistics' device: no synchronisation."""
        m = self.momentum
        peak_t = torch.ones_like(share_t) if peak_t is None else peak_t.to(share_t)
        self.kept = None
        if self.rows_carry(*cur.mean.shape):
            if self.share is None or self.share.shape != share_t.shape:    # rows of unknown weight: as this frame's
                self.share, self.share_host = share_t, list(share)
            if self.peak is None or self.peak.shape != peak_t.shape:
                self.peak = peak_t
            prev, behind = self.content, m * self.share
            total = behind + (1 - m) * share_t
            a = torch.where(total > 0, behind / total.clamp_min(1e-30), torch.zeros_like(total))
            # leaving: its mask (the segmenter's temporal average) fades over what is now behind it, whose
            # statistics are not its own -- its share and its peak drop; a region shrinking keeps its peak
            fading = (share_t < FADING * self.share) & (peak_t < FADING * self.peak)
            self.kept = fading | (share_t < PRESENT_FRACTION)
            a = torch.where(fading, torch.ones_like(a), a)
            a = torch.where((share_t >= APPEAR_FRACTION) & (self.share < PRESENT_FRACTION), torch.zeros_like(a), a)
            mix = lambda p, c: None if p is None or c is None else \
                torch.lerp(c, p, a.reshape(-1, *[1] * (c.dim() - 1)).to(c.dtype))  # noqa: E731
            self.content = RegionStats(cur.weight, mix(prev.mean, cur.mean), mix(prev.var, cur.var),
                                       mix(prev.cov, cur.cov))
            self.share, self.peak = total, m * self.peak + (1 - m) * peak_t
            self.share_host = [m * h + (1 - m) * s for h, s in zip(self.share_host, share)]
        else:
            self.content, self.share, self.share_host, self.peak = cur, share_t, list(share), peak_t
        if offset is not None:
            self.new_offset(offset)

    def new_offset(self, offset: torch.Tensor) -> None:
        """Store the iterative form's new offset, the rows the last ``update`` kept taken from the previous."""
        lo = self.linear_offset
        if self.kept is not None and lo is not None and lo.shape == offset.shape:
            offset = torch.where(self.kept[:, None], lo, offset)
        self.linear_offset = offset

    def smooth(self, cur: RegionStats, share: list[float] | None = None,
               peak_t: torch.Tensor | None = None) -> RegionStats:
        """This frame's statistics as its output uses them (m*previous + (1-m)*current when the state
        carries, else ``cur``), the state updated (``update``); ``share``: each region's share of the
        frame's weight (None: taken from ``cur.weight``); ``peak_t``: each region's largest mask weight."""
        K, C = cur.mean.shape
        share_t = weight_share(cur.weight)
        if share is None:
            share = share_t.tolist()
        carried = self.carries(K, C, share)
        out = cur
        if carried:
            prev, m = self.content, self.momentum
            mix = lambda a, b: None if a is None or b is None else m * a + (1 - m) * b  # noqa: E731
            out = RegionStats(cur.weight, mix(prev.mean, cur.mean), mix(prev.var, cur.var), mix(prev.cov, cur.cov))
        self.update(cur, share_t, share, peak_t)
        return out


# --------------------------------------------------------------------------- the modes

def linear_exact(fc: torch.Tensor, wc: torch.Tensor, mu_c: torch.Tensor, mu_s: torch.Tensor,
                 alpha: float) -> torch.Tensor:
    """F_o = F_c + alpha * sum_k W_k (mu_s^k - mu_c^k): the fixed point of §3.1, in one pass."""
    shift = torch.einsum("kc,khw->chw", alpha * (mu_s - mu_c), wc)
    return fc + shift


# the paper's iteration F_o <- F_c - beta (mu_o - mu_s) converges only for beta < 1, i.e. strength below this
LINEAR_ITERATION_MAX_STRENGTH = 0.5


def linear_iteration_converges(strength: float) -> bool:
    """Whether the paper's linear iteration converges at this strength (beta = s / (1 - s) < 1)."""
    return strength < LINEAR_ITERATION_MAX_STRENGTH


def check_linear_iteration(strength: float) -> None:
    """ValueError where the paper's iteration diverges (beta = s/(1-s) >= 1: it oscillates or blows up into
    an all-zero or all-NaN frame): reconstruct() and the fused op alike."""
    if not linear_iteration_converges(strength):
        raise ValueError(f"the paper's linear iteration converges only for strength below "
                         f"{LINEAR_ITERATION_MAX_STRENGTH}, got {strength}: use iterations=None (the exact form)")


def linear_beta(alpha: float) -> float:
    """beta of the iteration F_o <- F_c - beta (mu_o - mu_s) whose fixed point has strength alpha."""
    if not 0 <= alpha < 1:
        raise ValueError(f"the iterative linear solve needs strength in [0, 1), got {alpha}")
    return alpha / (1 - alpha)


def linear_iterative_reference(fc: torch.Tensor, wc: torch.Tensor, mu_s: torch.Tensor, alpha: float,
                               iterations: int) -> torch.Tensor:
    """The paper's iteration done literally, one full-tensor update per step and region.

    Setting dL/dF_o = 0 for L = 1/2||F_o - F_c||^2 + lambda/(4C^2)||mu_o - mu_s||^2 gives
    F_o = F_c - beta (mu_o - mu_s), beta = lambda / (2 N C^2).  The paper's Eq. 5 prints the
    last term as lambda/(4NC^2) * sum_k F_o, i.e. N/2 times too large (ALGORITHM.md,
    "Error in the paper's Eq. 5"); iterated as printed it diverges or pulls the mean to
    zero.  This implements the derivation.  It converges (oscillating) iff beta < 1,
    i.e. alpha < 1/2.
    """
    beta = linear_beta(alpha)
    fc32 = fc.float()
    out = torch.zeros_like(fc32)
    for k in range(wc.shape[0]):
        w = wc[k]
        n = w.sum().clamp_min(EPS)
        fo = fc32.clone()
        for _ in range(iterations):
            mu_o = (fo * w).sum((1, 2)) / n
            fo = fc32 - beta * (mu_o - mu_s[k])[:, None, None]
        out += w * fo
    return out


def linear_iterative_shift(mu_c: torch.Tensor, mu_s: torch.Tensor, alpha: float, iterations: int,
                           offset0: torch.Tensor | None = None):
    """The paper's N iterations in O(K*C): the region mean obeys the scalar recurrence
    mu^{t} = mu_c - beta (mu^{t-1} - mu_s), so F_o^N = F_c - beta (mu^{N-1} - mu_s) = F_c + shift.
    ``offset0`` (mu^0 - mu_c, per region) warm-starts it.  Returns (shift, mu^N - mu_c), both K x C."""
    beta = linear_beta(alpha)
    mu = mu_c + (offset0 if offset0 is not None else 0)
    prev = mu
    for _ in range(iterations):  # K x C scalars only: 500 steps cost nothing
        prev, mu = mu, mu_c - beta * (mu - mu_s)
    shift = -beta * (prev - mu_s) if iterations > 0 else (mu - mu_c)
    return shift, mu - mu_c


def linear_iterative(fc: torch.Tensor, wc: torch.Tensor, mu_c: torch.Tensor, mu_s: torch.Tensor,
                     alpha: float, iterations: int, offset0: torch.Tensor | None = None):
    """F_o after N iterations, via ``linear_iterative_shift``; returns (F_o, mu^N - mu_c)."""
    shift, off = linear_iterative_shift(mu_c, mu_s, alpha, iterations, offset0)
    return fc + torch.einsum("kc,khw->chw", shift, wc), off


def adain(fc: torch.Tensor, wc: torch.Tensor, cs: RegionStats, ss: RegionStats, alpha: float) -> torch.Tensor:
    a = ss.std / cs.std                      # K x C
    b = ss.mean - a * cs.mean
    A = torch.einsum("kc,khw->chw", a, wc)
    B = torch.einsum("kc,khw->chw", b, wc)
    return (1 - alpha) * fc + alpha * (A * fc + B)


def _sqrtm_pair(cov: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(C^{1/2}, C^{-1/2}) of a symmetric PSD matrix, or of each of a batch of them (... x C x C; the
    decoder's training mixes, training/mixing.py), by eigendecomposition, in float64, regularised by
    ``eps`` times the mean eigenvalue."""
    c = cov.double()
    C = c.shape[-1]
    reg = eps * (torch.diagonal(c, dim1=-2, dim2=-1).sum(-1) / C).clamp_min(1e-12)
    n = torch.get_num_threads()
    if c.device.type == "cpu" and n > 1:
        # a C x C eigendecomposition gains nothing from threads, and LAPACK's threads spin for
        # seconds when the cores are busy (measured: 16 ms on one thread, 2.6 s on two busy cores)
        torch.set_num_threads(1)
    try:
        e, v = torch.linalg.eigh(c + reg[..., None, None] * torch.eye(C, dtype=c.dtype, device=c.device))
    finally:
        torch.set_num_threads(n)
    e = e.clamp_min(reg[..., None])
    vt = v.transpose(-2, -1)
    return (v * e.sqrt()[..., None, :]) @ vt, (v * e.rsqrt()[..., None, :]) @ vt


WCT_EPS = 1e-5


def wct(fc: torch.Tensor, wc: torch.Tensor, cs: RegionStats, ss: RegionStats, alpha: float,
        eps: float = WCT_EPS, s_half: torch.Tensor | None = None) -> torch.Tensor:
    """Whitening-colouring per region: T_k(f) = C_s^{1/2} C_c^{-1/2} (f - mu_c) + mu_s. ``s_half``: the
    style's C_s^{1/2} per region, when already computed (StyleStats.cov_sqrt, once per style)."""
    C = fc.shape[0]
    f = fc.reshape(C, -1)
    out = torch.zeros_like(f)
    for k in range(wc.shape[0]):
        w = wc[k].reshape(-1)
        if float(w.max()) <= 0:
            continue
        s_half_k = _sqrtm_pair(ss.cov[k], eps)[0] if s_half is None else s_half[k]
        _, c_ihalf = _sqrtm_pair(cs.cov[k], eps)
        M = (s_half_k @ c_ihalf).float()
        tk = M @ (f - cs.mean[k][:, None]) + ss.mean[k][:, None]
        out += w * tk
    return ((1 - alpha) * f + alpha * out).reshape(fc.shape)


# ---- gram: Gatys' objective, optimised in feature space

# a region with at least this share of the frame's weight pulls towards its style Gram matrix with full
# force, one with less in proportion: each region's term is normalised by its own mass, so a few stray
# weights (one pixel at 0.001, a face's mask decaying after it left) pulled as hard as a whole region --
# that pixel was pushed to carry the region's Gram matrix, and its stiff term stalled the descent of the
# frame (relative Gram error 1.27 instead of 0.28 after 10 steps in the audit's case)
GRAM_FULL_FRACTION = 0.01


def gram_region_weights(wc: torch.Tensor) -> torch.Tensor:
    """Per region, its style term's weight: min(1, mass / (GRAM_FULL_FRACTION * frame's mass))."""
    n = wc.reshape(wc.shape[0], -1).sum(1)
    return (n / (GRAM_FULL_FRACTION * n.sum()).clamp_min(EPS)).clamp(max=1.0)


def gram_objective(x: torch.Tensor, xc: torch.Tensor, wc: torch.Tensor, gs: torch.Tensor,
                   style_weight: float, cw: torch.Tensor | None = None) -> torch.Tensor:
    """L(X) = 1/(2N) ||X - X_c||^2 + style_weight/(4C) sum_k ||G_k(X) - G_s^k||_F^2,
    G_k(X) = X diag(W_k) X^T / sum(W_k), all in units of the style's feature scale; each region's term
    scaled by gram_region_weights (1 for any region of 1 % of the frame or more)."""
    C, N = x.shape
    loss = 0.5 * ((x - xc) ** 2).sum() / N
    cw = gram_region_weights(wc) if cw is None else cw      # gram_descent passes it, once
    for k in range(wc.shape[0]):
        n = wc[k].sum().clamp_min(EPS)
        g = (x * wc[k]) @ x.T / n
        loss = loss + cw[k] * style_weight / (4 * C) * ((g - gs[k]) ** 2).sum()
    return loss


def gram_gradient(x: torch.Tensor, xc: torch.Tensor, wc: torch.Tensor, gs: torch.Tensor,
                  style_weight: float, cw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, dL/dX) in closed form: dL/dX = (X - X_c)/N + style_weight/C sum_k c_k (G_k - G_s^k) X W_k / n_k
    (c_k: gram_region_weights)."""
    C, N = x.shape
    d = x - xc
    loss = 0.5 * (d ** 2).sum() / N
    grad = d / N
    cw = gram_region_weights(wc) if cw is None else cw      # gram_descent passes it, once
    for k in range(wc.shape[0]):
        n = wc[k].sum().clamp_min(EPS)
        xw = x * wc[k]
        diff = xw @ x.T / n - gs[k]
        loss = loss + cw[k] * style_weight / (4 * C) * (diff ** 2).sum()
        grad = grad + (cw[k] * style_weight / C) * (diff @ xw) / n
    return loss, grad


def gram_descent(x0: torch.Tensor, xc: torch.Tensor, wc: torch.Tensor, gs: torch.Tensor, style_weight: float,
                 steps: int, step0: float = 1.0, history: list | None = None) -> torch.Tensor:
    """Gradient descent with Armijo backtracking: the loss never rises."""
    x = x0.clone()
    cw = gram_region_weights(wc)              # the masks are fixed over the descent
    loss, g = gram_gradient(x, xc, wc, gs, style_weight, cw)
    t = step0
    if history is not None:
        history.append(float(loss))
    for _ in range(steps):
        g2 = float((g * g).sum())
        if g2 == 0:
            break
        while True:
            cand = x - t * g
            cl = gram_objective(cand, xc, wc, gs, style_weight, cw)
            if float(cl) <= float(loss) - 1e-4 * t * g2 or t < 1e-12:
                break
            t *= 0.5
        if float(cl) > float(loss):
            break
        x = cand
        loss, g = gram_gradient(x, xc, wc, gs, style_weight, cw)
        t = min(t * 2.0, 1e6)
        if history is not None:
            history.append(float(loss))
    return x


# ---- patch swap

def patch_swap(fc: torch.Tensor, fs: torch.Tensor, wc: torch.Tensor | None = None,
               ws: torch.Tensor | None = None, patch: int = 3, return_index: bool = False):
    """Replace each content patch by its most similar style patch (normalised
    cross-correlation, Chen & Schmidt 2016) and average the overlaps.  With
    masks, a content pixel only takes patches centred in its own (argmax) style
    region; a region with no style patch takes from the whole style."""
    C = fc.shape[0]
    pad = patch // 2
    fs32, fc32 = fs.float(), fc.float()
    P = F.unfold(fs32[None], patch, padding=pad)[0].T           # M x (C*p*p)
    M = P.shape[0]
    Pn = P / P.norm(dim=1, keepdim=True).clamp_min(EPS)
    score = F.conv2d(fc32[None], Pn.reshape(M, C, patch, patch), padding=pad)[0]  # M x h x w
    if wc is not None and ws is not None and wc.shape[0] > 1:
        rc = wc.argmax(0)                                         # h x w
        rs = ws.reshape(ws.shape[0], -1).argmax(0)                # M
        allowed = rs[:, None, None] == rc[None]                   # M x h x w
        has = allowed.any(0, keepdim=True)
        score = torch.where(allowed | ~has, score, torch.full_like(score, -math.inf))
    idx = score.argmax(0)                                         # h x w
    onehot = F.one_hot(idx, M).permute(2, 0, 1).float()[None]     # 1 x M x h x w
    out = F.conv_transpose2d(onehot, P.reshape(M, C, patch, patch), padding=pad)[0]
    cnt = F.conv_transpose2d(onehot.sum(1, keepdim=True), torch.ones(1, 1, patch, patch, device=fc.device),
                             padding=pad)[0]
    out = out / cnt.clamp_min(1)
    return (out, idx) if return_index else out


# --------------------------------------------------------------------------- the entry point

def reconstruct(fc: torch.Tensor, wc: torch.Tensor | None, style: StyleStats, mode: str = "linear",
                strength: float = 1.0, *, iterations: int | None = None, state: ReconState | None = None,
                gram_steps: int = 10, gram_weight: float = 10.0, use_kernel: bool = True,
                floor: float | None = None) -> torch.Tensor:
    """Masked reconstruction of content features ``fc`` towards ``style`` (see module doc).

    ``wc``: K x h x w content regions (any resolution; area-resized), or None for
    one global region.  ``iterations``: for ``linear``, run the paper's
    iteration N times instead of the exact closed form (only below strength 0.5, where it converges:
    ValueError otherwise); for ``gram``, the number of descent steps (default ``gram_steps``).
    ``state``: carries smoothed statistics and the warm start between frames (ReconState: weighted by
    each region's share of the frames; a region appearing restarts that frame).  ``use_kernel``: on a
    GPU, run ``linear``/``adain`` through the fused CUDA op when it is available, and take
    ``wct``/``gram``'s region statistics from its first pass (for K <= 8 regions; more take the PyTorch
    path).  ``floor``: results below it are raised to it (the
    stylizer passes 0: features of a ReLU are never negative; the fused op does it in its second
    pass).  Returns a tensor of ``fc``'s shape and dtype; all statistics are float32.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    shape, dtype = fc.shape, fc.dtype
    f = _as_chw(fc, "content features")
    C, h, w = f.shape
    if style.features.shape[0] != C:
        raise ValueError(f"content has {C} channels but the style has {style.features.shape[0]}: "
                         f"encode both at the same layer")
    if wc is None:
        wc, mass = full_mask((h, w), f.device), [float(h * w)]
    else:       # the regions' weights come back with the masks' checks: no second synchronisation
        wc, mass = check_masks(wc, (h, w), "content masks", with_mass=True)
    K = wc.shape[0]
    if K != style.num_regions:
        raise ValueError(f"content masks have {K} regions but the style has {style.num_regions}")
    share = [m / (h * w) for m in mass]         # each region's share of the frame's weight
    alpha = float(strength)
    if mode == "linear" and iterations is not None:
        check_linear_iteration(alpha)
    if mode in ("linear", "adain") and f.is_cuda and use_kernel and K <= 8:      # the kernel's K <= 8
        from . import kernels
        if kernels.available():   # the fused two-pass CUDA op (realtime/csrc/masked_recon.cu)
            out = kernels.fused_reconstruct(f[None], wc, style, mode, alpha, iterations, state, floor=floor,
                                            share=share)
            if state is not None:
                state.frames += 1
            return out.reshape(shape)
    f32 = f.float()
    ss = style.stats
    need_cov = mode == "wct"
    sums = None
    if mode in ("wct", "gram") and f.is_cuda and use_kernel and K <= 8:
        from . import kernels
        if kernels.available():   # the kernel's masked statistics; the covariance by cuBLAS (below)
            sums = torch.ops.stylecam.masked_moments(f[None], wc.contiguous())
    cs = masked_stats(f32, wc, with_cov=need_cov, sums=sums)
    # the iterative form's warm start, read before smoothing updates which regions the state has seen;
    # none at strength 0 (where the answer is the content itself, not the previous frame's shift)
    off0 = state.warm_offset(K, C, share) if state is not None and alpha > 0 else None
    if state is not None:
        cs = state.smooth(cs, share, wc.amax((1, 2)))

    if mode == "linear":
        if iterations is None:
            out = linear_exact(f32, wc, cs.mean, ss.mean, alpha)
        else:
            out, off = linear_iterative(f32, wc, cs.mean, ss.mean, alpha, iterations, off0)
            if state is not None:
                state.new_offset(off)
    elif mode == "adain":
        out = adain(f32, wc, cs, ss, alpha)
    elif mode == "wct":
        out = wct(f32, wc, cs, ss, alpha, s_half=style.cov_sqrt)
    elif mode == "gram":
        scale = style.gram_scale
        xc = f32.reshape(C, -1) / scale
        gs = ss.gram / scale ** 2
        x0 = xc
        if state is not None and state.residual is not None and state.residual.shape == f32.shape:
            x0 = xc + state.residual.reshape(C, -1) / scale
        steps = gram_steps if iterations is None else iterations
        wflat = wc.reshape(wc.shape[0], -1)
        x = gram_descent(x0, xc, wflat, gs, gram_weight, steps)
        full = (x * scale).reshape(C, h, w)
        if state is not None:
            state.residual = (full - f32).detach()
        out = f32 + alpha * (full - f32)
    else:  # patchswap
        sw = patch_swap(f32, style.features, wc, style.masks)
        out = (1 - alpha) * f32 + alpha * sw
    if state is not None:
        state.frames += 1
    if floor is not None:
        out = out.clamp_min(floor)
    if dtype == torch.float16:
        out = out.clamp(-FP16_MAX, FP16_MAX)
    return out.to(dtype).reshape(shape)
