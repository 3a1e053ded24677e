"""Masked feature reconstruction: each test can fail if the maths is wrong."""

import pytest
import torch

from realtime import reconstruct as R

torch.manual_seed(0)


def hard_masks(h, w, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, k, (h, w), generator=g)
    # make every region non-empty
    for i in range(k):
        lab[i, i] = i
    return torch.nn.functional.one_hot(lab, k).permute(2, 0, 1).float()


def soft_masks(h, w, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(k, h, w, generator=g) ** 3
    return m / m.sum(0, keepdim=True)


def feats(c, h, w, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(c, h, w, generator=g) * scale + shift).relu()


def region_mean(f, m):
    return (f * m).sum((1, 2)) / m.sum()


# ---------------------------------------------------------------- linear

def test_linear_iteration_converges_to_closed_form():
    fc, fs = feats(16, 13, 17, 1), feats(16, 11, 9, 2, scale=3, shift=1)
    wc, ws = soft_masks(13, 17), soft_masks(11, 9, seed=5)
    st = R.StyleStats.from_features(fs, ws)
    cs = R.masked_stats(fc, R.check_masks(wc, (13, 17)))
    for alpha in (0.1, 0.3, 0.45):  # the iteration converges for beta < 1, i.e. alpha < 1/2
        exact = R.linear_exact(fc, wc, cs.mean, st.stats.mean, alpha)
        ref = R.linear_iterative_reference(fc, wc, st.stats.mean, alpha, 500)
        fast, _ = R.linear_iterative(fc, wc, cs.mean, st.stats.mean, alpha, 500)
        torch.testing.assert_close(ref, exact, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)


def test_linear_scalar_recurrence_equals_literal_iteration_for_few_steps():
    fc, fs = feats(8, 9, 7, 3), feats(8, 9, 7, 4, scale=2)
    wc = soft_masks(9, 7, k=2)
    st = R.StyleStats.from_features(fs, soft_masks(9, 7, k=2, seed=9))
    cs = R.masked_stats(fc, wc)
    for n in (1, 2, 5):
        ref = R.linear_iterative_reference(fc, wc, st.stats.mean, 0.7, n)   # diverging regime: still equal
        fast, _ = R.linear_iterative(fc, wc, cs.mean, st.stats.mean, 0.7, n)
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-3)


def test_paper_eq5_as_printed_is_wrong():
    """The misprinted update (lambda/(4NC^2) * sum F_o) does not reach the objective's minimiser."""
    C, N = 4, 50
    fc = torch.rand(C, N) + 1
    mu_s = torch.full((C,), 3.0)
    lam = 2 * N * C * C * 0.25            # beta = lambda/(2NC^2) = 0.25
    beta = lam / (2 * N * C * C)
    fo = fc.clone()
    for _ in range(50):                    # Eq. 5 as printed: sum_k F_s = M mu_s, sum_k F_o = N mu_o
        fo = fc + lam / (2 * N * C * C) * mu_s[:, None] - lam / (4 * N * C * C) * fo.sum(1, keepdim=True)
    alpha = beta / (1 + beta)
    exact = fc + alpha * (mu_s[:, None] - fc.mean(1, keepdim=True))
    assert (fo - exact).abs().max() > 0.5


def test_linear_matches_style_means_per_region():
    fc, fs = feats(32, 24, 20, 1), feats(32, 18, 30, 2, scale=4, shift=2)
    wc, ws = hard_masks(24, 20, 3, 1), hard_masks(18, 30, 3, 2)
    st = R.StyleStats.from_features(fs, ws)
    out = R.reconstruct(fc, wc, st, "linear", 1.0)
    for k in range(3):
        torch.testing.assert_close(region_mean(out, wc[k]), region_mean(fs, ws[k]), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- adain / wct

def region_std(f, m):
    mu = region_mean(f, m)
    return (((f - mu[:, None, None]) ** 2 * m).sum((1, 2)) / m.sum()).sqrt()


def region_cov(f, m):
    x = f.reshape(f.shape[0], -1)[:, m.reshape(-1) > 0.5].double()
    x = x - x.mean(1, keepdim=True)
    return x @ x.T / x.shape[1]


def test_adain_matches_means_and_stds_per_region():
    fc, fs = feats(32, 24, 20, 1), feats(32, 18, 30, 2, scale=4, shift=2)
    wc, ws = hard_masks(24, 20, 3, 1), hard_masks(18, 30, 3, 2)
    out = R.reconstruct(fc, wc, R.StyleStats.from_features(fs, ws), "adain", 1.0)
    for k in range(3):
        torch.testing.assert_close(region_mean(out, wc[k]), region_mean(fs, ws[k]), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(region_std(out, wc[k]), region_std(fs, ws[k]), rtol=1e-3, atol=1e-3)


def test_wct_matches_covariance_per_region():
    C = 8  # regions must hold more pixels than channels for a full-rank covariance
    fc = torch.randn(C, 40, 40)
    mix = torch.randn(C, C)
    fs = torch.einsum("ij,jhw->ihw", mix, torch.randn(C, 36, 44)) + 2
    wc, ws = hard_masks(40, 40, 2, 1), hard_masks(36, 44, 2, 2)
    out = R.reconstruct(fc, wc, R.StyleStats.from_features(fs, ws), "wct", 1.0)
    for k in range(2):
        torch.testing.assert_close(region_cov(out, wc[k]), region_cov(fs, ws[k]), rtol=1e-3, atol=2e-3)
        torch.testing.assert_close(region_mean(out, wc[k]), region_mean(fs, ws[k]), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- regions

@pytest.mark.parametrize("mode", ["linear", "adain", "wct"])
def test_one_full_region_equals_unmasked_transform(mode):
    fc, fs = feats(16, 15, 11, 1), feats(16, 12, 12, 2, scale=3)
    st_masked = R.StyleStats.from_features(fs, torch.ones(1, 12, 12))
    st_none = R.StyleStats.from_features(fs)
    a = R.reconstruct(fc, torch.ones(1, 15, 11), st_masked, mode, 0.8)
    b = R.reconstruct(fc, None, st_none, mode, 0.8)
    # and the unmasked transform written out directly
    mc, sc = fc.mean((1, 2)), fc.std((1, 2), unbiased=False)
    ms, s_s = fs.mean((1, 2)), fs.std((1, 2), unbiased=False)
    torch.testing.assert_close(a, b)
    if mode == "linear":
        torch.testing.assert_close(a, fc + 0.8 * (ms - mc)[:, None, None], rtol=1e-5, atol=1e-4)
    if mode == "adain":
        direct = (fc - mc[:, None, None]) / sc[:, None, None] * s_s[:, None, None] + ms[:, None, None]
        torch.testing.assert_close(a, 0.2 * fc + 0.8 * direct, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mode", ["linear", "adain", "wct"])
def test_swapping_region_labels_swaps_results(mode):
    fc, fs = feats(8, 20, 20, 1), feats(8, 20, 20, 2, scale=3, shift=1)
    wc = hard_masks(20, 20, 2, 3)
    ws = hard_masks(20, 20, 2, 4)
    out = R.reconstruct(fc, wc, R.StyleStats.from_features(fs, ws), mode, 1.0)
    # swapping the style's labels: each content region now gets the other style region
    out_sw = R.reconstruct(fc, wc, R.StyleStats.from_features(fs, ws.flip(0)), mode, 1.0)
    # swapping both: identical result
    out_both = R.reconstruct(fc, wc.flip(0), R.StyleStats.from_features(fs, ws.flip(0)), mode, 1.0)
    torch.testing.assert_close(out_both, out, rtol=1e-4, atol=1e-4)
    assert (out_sw - out).abs().max() > 0.1
    torch.testing.assert_close(region_mean(out_sw, wc[0]), region_mean(fs, ws[1]), rtol=1e-3, atol=1e-3)


def test_region_empty_in_style_falls_back_to_global():
    fc, fs = feats(8, 10, 10, 1), feats(8, 10, 10, 2, scale=3, shift=1)
    ws = torch.zeros(2, 10, 10)
    ws[0] = 1.0                                   # region 1 absent from the style
    st = R.StyleStats.from_features(fs, ws)
    assert st.fallback == (1,)
    wc = hard_masks(10, 10, 2, 0)
    out = R.reconstruct(fc, wc, st, "linear", 1.0)
    torch.testing.assert_close(region_mean(out, wc[1]), fs.mean((1, 2)), rtol=1e-4, atol=1e-4)
    assert torch.isfinite(out).all()


def test_region_empty_in_content_does_not_divide_by_zero():
    fc, fs = feats(8, 10, 10, 1), feats(8, 10, 10, 2)
    wc = torch.zeros(2, 10, 10)
    wc[0] = 1
    for mode, s, its in (("linear", 0.9, None), ("linear", 0.4, 3), ("adain", 0.9, None), ("wct", 0.9, None),
                         ("gram", 0.9, 3), ("patchswap", 0.9, None)):
        out = R.reconstruct(fc, wc, R.StyleStats.from_features(fs, hard_masks(10, 10, 2)), mode, s, iterations=its)
        assert torch.isfinite(out).all(), mode


def test_strength_zero_is_identity_and_strength_interpolates():
    fc, fs = feats(8, 10, 10, 1), feats(8, 10, 10, 2, scale=2)
    st = R.StyleStats.from_features(fs)
    for mode in ("linear", "adain", "wct", "patchswap"):
        torch.testing.assert_close(R.reconstruct(fc, None, st, mode, 0.0), fc)
    half = R.reconstruct(fc, None, st, "adain", 0.5)
    full = R.reconstruct(fc, None, st, "adain", 1.0)
    torch.testing.assert_close(half, 0.5 * (fc + full), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- precision

@pytest.mark.parametrize("mode", ["linear", "adain", "wct", "gram"])
def test_fp16_features_scaled_by_1000_stay_finite(mode):
    fc = (feats(16, 12, 12, 1) * 1000).half()     # sums of squares overflow FP16 by far
    fs = (feats(16, 12, 12, 2, scale=2) * 1000).half()
    s = 0.45 if mode == "linear" else 0.7             # linear's iteration converges below 0.5 only
    out = R.reconstruct(fc, soft_masks(12, 12, 2), R.StyleStats.from_features(fs, soft_masks(12, 12, 2, 3)),
                        mode, s, iterations=3)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    ref = R.reconstruct(fc.float(), soft_masks(12, 12, 2), R.StyleStats.from_features(fs.float(),
                        soft_masks(12, 12, 2, 3)), mode, s, iterations=3)
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2.0)


# ---------------------------------------------------------------- gram

def test_gram_gradient_matches_autograd():
    x = torch.randn(6, 40, dtype=torch.float64)
    xc = torch.randn(6, 40, dtype=torch.float64)
    w = soft_masks(5, 8, 2).reshape(2, -1).double()
    gs = torch.stack([torch.eye(6, dtype=torch.float64) * 2, torch.ones(6, 6, dtype=torch.float64) * 0.3 +
                      torch.eye(6, dtype=torch.float64)])
    xa = x.clone().requires_grad_(True)
    R.gram_objective(xa, xc, w, gs, 3.0).backward()
    loss, g = R.gram_gradient(x, xc, w, gs, 3.0)
    torch.testing.assert_close(g, xa.grad)
    torch.testing.assert_close(loss, R.gram_objective(x, xc, w, gs, 3.0))


def test_gram_descent_is_monotone_and_agrees_with_autograd_lbfgs():
    torch.manual_seed(1)
    xc = torch.randn(6, 60, dtype=torch.float64)
    w = soft_masks(6, 10, 2).reshape(2, -1).double()
    a = torch.randn(6, 6, dtype=torch.float64)
    gs = torch.stack([a @ a.T / 6 + torch.eye(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64) * 0.5])
    hist = []
    ours = R.gram_descent(xc, xc, w, gs, 2.0, 400, history=hist)
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:]))
    assert hist[-1] < 0.5 * hist[0]
    # plain autograd L-BFGS on the same objective, same start
    x = xc.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")
    opt.step(lambda: (opt.zero_grad(), (l := R.gram_objective(x, xc, w, gs, 2.0)), l.backward(), l)[-1])
    ref_loss = float(R.gram_objective(x.detach(), xc, w, gs, 2.0))
    assert hist[-1] == pytest.approx(ref_loss, rel=1e-3, abs=1e-6)
    torch.testing.assert_close(ours, x.detach(), rtol=1e-2, atol=1e-2)


def test_gram_warm_start_uses_previous_frame():
    fc, fs = feats(8, 10, 10, 1), feats(8, 10, 10, 2, scale=3, shift=1)
    st = R.StyleStats.from_features(fs)
    state = R.ReconState()
    first = R.reconstruct(fc, None, st, "gram", 1.0, iterations=30, state=state)
    assert state.residual is not None
    # the same frame again, warm-started, with zero steps: the previous answer
    again = R.reconstruct(fc, None, st, "gram", 1.0, iterations=0, state=state)
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-4)
    cold = R.reconstruct(fc, None, st, "gram", 1.0, iterations=0, state=None)
    torch.testing.assert_close(cold, fc)
    state.reset()
    assert state.residual is None


def test_linear_iterative_warm_start_carries_offset():
    fc, fs = feats(8, 10, 10, 1), feats(8, 10, 10, 2, scale=3, shift=1)
    st = R.StyleStats.from_features(fs)
    state = R.ReconState()
    a = R.reconstruct(fc, None, st, "linear", 0.4, iterations=200, state=state)
    b = R.reconstruct(fc, None, st, "linear", 0.4, iterations=1, state=state)   # already converged
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
    c = R.reconstruct(fc, None, st, "linear", 0.4, iterations=1, state=None)
    assert (c - a).abs().max() > 1e-2


def test_temporal_momentum_smooths_content_statistics():
    fs = feats(8, 10, 10, 2, scale=3, shift=1)
    st = R.StyleStats.from_features(fs)
    f1, f2 = feats(8, 10, 10, 1), feats(8, 10, 10, 1) + 5.0
    state = R.ReconState(momentum=0.5)
    R.reconstruct(f1, None, st, "linear", 1.0, state=state)
    out = R.reconstruct(f2, None, st, "linear", 1.0, state=state)
    # F_o = F_c + (mu_s - mu_smoothed); mu_smoothed is half way between the two frames' means
    mu_sm = 0.5 * (f1.mean((1, 2)) + f2.mean((1, 2)))
    torch.testing.assert_close(out, f2 + (fs.mean((1, 2)) - mu_sm)[:, None, None], rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- patchswap

def test_patchswap_picks_exact_nearest_patches():
    C = 5
    fs = torch.rand(C, 9, 9) + 0.1
    # content made of style pixels moved around: every 3x3 content patch that equals a style patch
    # must map to it; the brute-force nearest (cosine) patch is the reference everywhere
    fc = torch.rand(C, 7, 8) + 0.1
    fc[:, 1:4, 1:4] = fs[:, 4:7, 2:5]
    _, idx = R.patch_swap(fc, fs, return_index=True)
    P = torch.nn.functional.unfold(fs[None], 3, padding=1)[0].T
    Q = torch.nn.functional.unfold(fc[None], 3, padding=1)[0].T
    cos = (Q / Q.norm(dim=1, keepdim=True)) @ (P / P.norm(dim=1, keepdim=True)).T
    assert torch.equal(idx.reshape(-1), cos.argmax(1))
    assert int(idx[2, 2]) == 5 * 9 + 3     # the planted patch, centred at style (5, 3)


def test_patchswap_of_style_onto_itself_is_identity():
    fs = torch.rand(4, 8, 8) + 0.1
    torch.testing.assert_close(R.patch_swap(fs, fs), fs)


def test_patchswap_respects_regions():
    fs = torch.cat([torch.rand(3, 8, 4), torch.rand(3, 8, 4) + 5], 2)   # left dim, right bright
    ws = torch.zeros(2, 8, 8)
    ws[0, :, :4], ws[1, :, 4:] = 1, 1
    fc = torch.rand(3, 6, 6) + 5          # bright content, but labelled region 0 (dim side)
    wc = torch.zeros(2, 6, 6)
    wc[0] = 1
    _, idx = R.patch_swap(fc, fs, wc, ws, return_index=True)
    assert ((idx % 8) < 4).all()


# ---------------------------------------------------------------- errors

def test_bad_inputs_raise_value_error_naming_expectation():
    st = R.StyleStats.from_features(feats(8, 10, 10, 2))
    fc = feats(8, 10, 10, 1)
    with pytest.raises(ValueError, match="C x h x w"):
        R.reconstruct(torch.rand(2, 8, 10, 10), None, st)
    with pytest.raises(ValueError, match="channels"):
        R.reconstruct(feats(4, 10, 10), None, st)
    with pytest.raises(ValueError, match="sum to 1"):
        R.reconstruct(fc, torch.full((2, 10, 10), 0.9), R.StyleStats.from_features(feats(8, 10, 10), hard_masks(10, 10, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.reconstruct(fc, torch.full((1, 10, 10), float("nan")), st)
    two = torch.stack([torch.full((10, 10), 1.5), torch.full((10, 10), -0.5)])    # sums to 1, out of range
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.reconstruct(fc, two, R.StyleStats.from_features(feats(8, 10, 10), hard_masks(10, 10, 2)))
    with pytest.raises(ValueError, match="regions"):
        R.reconstruct(fc, hard_masks(10, 10, 3), st)
    with pytest.raises(ValueError, match="K x H x W"):
        R.reconstruct(fc, torch.ones(1, 1, 10, 10), st)
    with pytest.raises(ValueError, match="mode must be one of"):
        R.reconstruct(fc, None, st, "fancy")
    with pytest.raises(ValueError, match="strength"):
        R.reconstruct(fc, None, st, "linear", 1.5)
    with pytest.raises(ValueError, match=r"converges only for strength below 0\.5"):
        R.reconstruct(fc, None, st, "linear", 1.0, iterations=10)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):                # the iteration's own beta, called directly
        R.linear_beta(1.0)
    with pytest.raises(TypeError):
        R.reconstruct(fc.numpy(), None, st)


def test_masks_at_image_resolution_are_area_downsampled():
    fc, fs = feats(8, 10, 12, 1), feats(8, 10, 12, 2, scale=3)
    big = torch.zeros(2, 40, 48)
    big[0, :, :24], big[1, :, 24:] = 1, 1
    out_big = R.reconstruct(fc, big, R.StyleStats.from_features(fs, big), "linear", 1.0)
    small = torch.zeros(2, 10, 12)
    small[0, :, :6], small[1, :, 6:] = 1, 1
    out_small = R.reconstruct(fc, small, R.StyleStats.from_features(fs, small), "linear", 1.0)
    torch.testing.assert_close(out_big, out_small)


def test_style_std_is_computed_once_and_equals_the_stats():
    """StyleStats.std (what the fused op takes every frame) is the stats' std, the same tensor each
    time it is asked for (not recomputed), and each style has its own."""
    fs = feats(8, 9, 7, 4, scale=2)
    st = R.StyleStats.from_features(fs, soft_masks(9, 7, k=2, seed=9))
    torch.testing.assert_close(st.std, st.stats.std)
    assert st.std is st.std
    other = R.StyleStats.from_features(fs * 3, soft_masks(9, 7, k=2, seed=9))
    torch.testing.assert_close(other.std, 3 * st.std, rtol=1e-4, atol=1e-4)


def test_masks_checked_at_the_feature_size_give_the_frame_size_result():
    """check_masks area-averages to the features' size before it validates (16x cheaper at relu3_1);
    its output equals resize_masks of the frame-size masks (the reference), and reconstruct fed
    the checked masks gives what it gives from the frame-size masks."""
    g = torch.Generator().manual_seed(5)
    frame_masks = torch.rand(3, 43, 71, generator=g) ** 2
    frame_masks = frame_masks / frame_masks.sum(0, keepdim=True)
    size = (11, 18)                                          # ceil(43 / 4), ceil(71 / 4): not integer factors
    checked = R.check_masks(frame_masks, size, "content masks")
    torch.testing.assert_close(checked, R.resize_masks(frame_masks, size), rtol=0, atol=1e-6)
    fc = feats(8, *size, seed=3)
    st = R.StyleStats.from_features(feats(8, 12, 12, seed=4), hard_masks(12, 12, 3))
    for mode in ("linear", "adain", "wct"):
        ref = R.reconstruct(fc, frame_masks, st, mode, 0.8, floor=0.0)
        got = R.reconstruct(fc, checked, st, mode, 0.8, floor=0.0)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    bad = frame_masks.clone()
    bad[:, :8, :8] = float("nan")                            # still caught after averaging
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.check_masks(bad, size)
    with pytest.raises(ValueError, match="sum to 1"):
        R.check_masks(frame_masks * 0.9, size)


# ---------------------------------------------------------------- regions that come and go (audit, session 27)

def _two_regions(h, w, share=0.3, seed=0):
    """Region 1 a soft blob of about ``share`` of the frame, region 0 the rest."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blob = torch.sigmoid((share - (xx ** 2 + yy ** 2)) * 12)
    return torch.stack([1 - blob, blob])


def _without_region_1(h, w):
    return torch.stack([torch.ones(h, w), torch.zeros(h, w)])


def _fading(h, w, frames):
    """Region 1's masks as the portrait segmenter makes them when a face leaves for ``frames[1]`` frames
    after ``frames[0]`` and comes back for ``frames[2]``: its temporal average 0.6 * previous + 0.4 *
    current, so the mask fades where the face was (over what is now behind it) and ramps back in."""
    blob, prev, out = _two_regions(h, w)[1], None, []
    for there in [1] * frames[0] + [0] * frames[1] + [1] * frames[2]:
        raw = blob * there
        prev = raw if prev is None else 0.6 * prev + 0.4 * raw
        out.append((there, torch.stack([1 - prev, prev])))
    return out


def _frame(h, w, there, seed):
    """Features: a textured background (mean ~2.6), and where the face is and when it is there, a brighter
    face (mean ~6)."""
    f = feats(8, h, w, seed, scale=1.5, shift=2)
    if there:
        blob = _two_regions(h, w)[1] > 0.5
        f[:, blob] = feats(8, h, w, seed + 1000, scale=2, shift=6)[:, blob]
    return f


@pytest.mark.parametrize("mode", ["adain", "linear"])
@pytest.mark.parametrize("away", [5, 30])
def test_a_face_that_leaves_and_comes_back_keeps_its_statistics(mode, away):
    """A face leaving: its mask fades where it was over ~15 frames (the segmenter's temporal average),
    over the background now behind it. Its row of the temporal state keeps the face's statistics: a
    region whose share falls below FADING of its row's adds nothing, so the row is the face's when it
    comes back (the plain m*previous + (1-m)*current mix had filled it with the background's, or an empty
    region's zeros: the face came back at 0.4-0.54 of its mean). Away long enough for no weight to stay
    behind the row (30 frames), it comes back as appearing: that frame starts afresh."""
    h, w = 24, 32
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state = R.ReconState(momentum=0.6)
    seq = _fading(h, w, (4, away, 3))
    face_row = None
    for t, (there, m) in enumerate(seq):
        fc = _frame(h, w, there, 10 + t)
        if t == 4 + away:                               # the first frame back
            fresh = R.reconstruct(fc, m, st, mode, 0.8, state=R.ReconState(momentum=0.6))
            appearing = state.appearing([float(v) / (h * w) for v in R.check_masks(m, (h, w), with_mass=True)[1]])
            prev = state.content
            out = R.reconstruct(fc, m, st, mode, 0.8, state=state)
            if appearing:
                torch.testing.assert_close(out, fresh)
            else:
                cur = R.masked_stats(fc, R.check_masks(m, (h, w)))
                mixed = R.RegionStats(cur.weight, 0.6 * prev.mean + 0.4 * cur.mean, 0.6 * prev.var + 0.4 * cur.var)
                want = R.adain(fc, m, mixed, st.stats, 0.8) if mode == "adain" else \
                    R.linear_exact(fc, m, mixed.mean, st.stats.mean, 0.8)
                torch.testing.assert_close(out, want)
            assert appearing == (away == 30)
            continue
        R.reconstruct(fc, m, st, mode, 0.8, state=state)
        if t == 3:
            face_row = state.content.mean[1].clone()
        if 4 <= t < 4 + away:                            # leaving and away: the face's row is kept
            torch.testing.assert_close(state.content.mean[1], face_row)
    assert state.share_host[1] > R.PRESENT_FRACTION


def test_the_plain_mix_would_have_lost_the_face():
    """The same leaving face: mixed m*previous + (1-m)*current whatever the weights (computed here), its row
    drifts to the background's -- what the state's rule guards against (its row stays the face's)."""
    h, w = 24, 32
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state, plain = R.ReconState(momentum=0.6), None
    for t, (there, m) in enumerate(_fading(h, w, (4, 5, 0))):
        fc = _frame(h, w, there, 10 + t)
        R.reconstruct(fc, m, st, "adain", 0.8, state=state)
        cur = R.masked_stats(fc, m).mean[1]
        plain = cur if plain is None else 0.6 * plain + 0.4 * cur
        if t == 3:
            face = state.content.mean[1].clone()
    assert float(plain.mean()) < 0.8 * float(face.mean())
    torch.testing.assert_close(state.content.mean[1], face)


def _hard_box(h, w, frac):
    """Region 1 a centred box of about ``frac`` of the frame (mask peak 1), region 0 the rest."""
    m = torch.zeros(2, h, w)
    bh, bw = max(1, round(h * frac ** 0.5)), max(1, round(w * frac ** 0.5))
    m[1, (h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw] = 1
    m[0] = 1 - m[1]
    return m


@pytest.mark.parametrize("shares", [(0.2, 0.3), (0.3, 0.18), (0.1, 0.2)])
def test_rows_mix_in_proportion_to_the_weight_behind_them(shares):
    """Two frames whose region 1 has shares s0 then s1 (growing, or shrinking while its mask keeps its peak:
    not fading): its row is lerp(current, previous, m*s0 / (m*s0 + (1-m)*s1)), mean and variance."""
    h, w = 40, 40
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state = R.ReconState(momentum=0.6)
    m0, m1 = _hard_box(h, w, shares[0]), _hard_box(h, w, shares[1])
    s0, s1 = float(m0[1].mean()), float(m1[1].mean())
    R.reconstruct(feats(8, h, w, 1, scale=2, shift=3), m0, st, "adain", 1.0, state=state)
    prev = R.RegionStats(state.content.weight, state.content.mean.clone(), state.content.var.clone())
    fc = feats(8, h, w, 2, scale=3, shift=1)
    R.reconstruct(fc, m1, st, "adain", 1.0, state=state)
    cur = R.masked_stats(fc, m1)
    a = 0.6 * s0 / (0.6 * s0 + 0.4 * s1)
    torch.testing.assert_close(state.content.mean[1], a * prev.mean[1] + (1 - a) * cur.mean[1])
    torch.testing.assert_close(state.content.var[1], a * prev.var[1] + (1 - a) * cur.var[1])
    assert abs(a - 0.6) > 0.05                                      # not the plain mix


def test_a_region_shrinking_fast_with_its_mask_at_full_weight_is_followed():
    """A face turning away shrinks fast but its mask keeps its peak: its row follows its statistics (it is
    not taken for a fading mask and frozen, which had held stale statistics for several frames)."""
    h, w = 40, 40
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state = R.ReconState(momentum=0.6)
    for t, frac in enumerate((0.25, 0.25, 0.15, 0.08, 0.08)):
        prev = None if state.content is None else state.content.mean[1].clone()
        R.reconstruct(feats(8, h, w, 20 + t, scale=2, shift=1 + t), _hard_box(h, w, frac), st, "adain", 1.0,
                      state=state)
        if prev is not None:
            assert not torch.allclose(state.content.mean[1], prev)        # never frozen


def test_a_region_about_the_presence_threshold_does_not_restart_frame_after_frame():
    """A small region hovering about PRESENT_FRACTION (a distant face, a segmenter's residue) is not
    'appearing' again and again: only a region of APPEAR_FRACTION or more restarts a frame."""
    h, w = 60, 80
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state, restarts = R.ReconState(momentum=0.6), 0
    g = torch.Generator().manual_seed(0)
    for t in range(60):
        frac = float(torch.rand(1, generator=g)) * 3e-3             # 0 .. 0.3 % of the frame
        m = _hard_box(h, w, frac) if frac * h * w >= 1 else _without_region_1(h, w)
        share = [float(v) / (h * w) for v in R.check_masks(m, (h, w), with_mass=True)[1]]
        restarts += state.appearing(share)
        R.reconstruct(feats(8, h, w, t), m, st, "adain", 1.0, state=state)
    assert restarts == 0
    m = _hard_box(h, w, 0.05)                                       # a face entering: it does restart
    assert state.appearing([1 - float(m[1].mean()), float(m[1].mean())]) == (state.share_host[1] < R.PRESENT_FRACTION)


def test_a_restart_keeps_the_rows_of_the_regions_that_are_not_appearing():
    """Portrait regions: while the face is away (its row kept), the background appears (a close-up ends)
    and restarts the frame's output -- the face's row in the state stays the face's."""
    h, w = 24, 32
    K3 = lambda face, bg: torch.stack([bg, 1 - bg - face, face])          # noqa: E731 background, person, face
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), soft_masks(10, 10, k=3))
    state = R.ReconState(momentum=0.6)
    zero, face = torch.zeros(h, w), _two_regions(h, w)[1] * 0.5
    for t in range(3):                                              # a close-up: person and face, no background
        R.reconstruct(_frame(h, w, 1, 80 + t), K3(face, zero), st, "adain", 1.0, state=state)
    face_row = state.content.mean[2].clone()
    bg = torch.zeros(h, w)
    bg[:, :8] = 1.0
    faded = face * 0.6
    R.reconstruct(_frame(h, w, 0, 90), K3(faded, bg * (1 - faded)), st, "adain", 1.0, state=state)
    torch.testing.assert_close(state.content.mean[2], face_row)


def test_momentum_must_be_below_one():
    from realtime.stylizer import StylizerConfig
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="momentum"):
            R.ReconState(momentum=bad)
        with pytest.raises(ValueError, match="momentum"):
            StylizerConfig(momentum=bad)


def test_a_region_seen_for_the_first_time_starts_afresh():
    """A region present for the first time (a face entering the frame) has no weight behind its row of the
    state: that frame is stylized with its own statistics, as after a scene cut (with the state's zeros it
    had 0.4 of its mean and variance), and the next frames smooth again."""
    h, w = 12, 16
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state = R.ReconState(momentum=0.6)
    alone, both = _without_region_1(h, w), _two_regions(h, w)
    for t in range(3):
        R.reconstruct(feats(8, h, w, 40 + t, scale=3, shift=2), alone, st, "adain", 1.0, state=state)
    assert state.share_host == [1.0, 0.0]
    fc = feats(8, h, w, 50, scale=3, shift=2)
    out = R.reconstruct(fc, both, st, "adain", 1.0, state=state)
    torch.testing.assert_close(out, R.reconstruct(fc, both, st, "adain", 1.0, state=R.ReconState(momentum=0.6)))
    assert state.share_host[1] > R.PRESENT_FRACTION and state.carries(2, 8, state.share_host)
    fc2 = feats(8, h, w, 51, scale=3, shift=2)
    assert not torch.allclose(R.reconstruct(fc2, both, st, "adain", 1.0, state=state),
                              R.reconstruct(fc2, both, st, "adain", 1.0))     # smoothing again


def test_a_region_of_steady_size_is_smoothed_as_before():
    """For regions whose shares do not change, the state's rows are exactly m*previous + (1-m)*current."""
    h, w = 12, 16
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    state, both = R.ReconState(momentum=0.6), _two_regions(h, w)
    R.reconstruct(feats(8, h, w, 1), both, st, "adain", 1.0, state=state)
    prev = state.content.mean.clone()
    fc = feats(8, h, w, 2)
    R.reconstruct(fc, both, st, "adain", 1.0, state=state)
    torch.testing.assert_close(state.content.mean, 0.6 * prev + 0.4 * R.masked_stats(fc, both).mean)


def test_the_fused_op_keeps_and_restarts_regions_as_the_reference_does():
    """The fused op's path (the CPU reference op here; the CUDA kernel on a GPU: the GPU test below) over
    frames where a face leaves (its mask fading), comes back, and appears: the same outputs and state as
    reconstruct()'s."""
    from realtime import kernels
    h, w = 24, 32
    st = R.StyleStats.from_features(feats(8, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    seq = [(0, _without_region_1(h, w))] * 2 + _fading(h, w, (3, 5, 2)) + _fading(h, w, (2, 14, 2))
    for mode, its in (("adain", None), ("linear", 6)):
        s_ref, s_op = R.ReconState(momentum=0.6), R.ReconState(momentum=0.6)
        for t, (there, m) in enumerate(seq):
            fc = _frame(h, w, there, 60 + t)
            a = R.reconstruct(fc, m, st, mode, 0.4, iterations=its, state=s_ref, use_kernel=False)
            share = [float(v) / (h * w) for v in R.check_masks(m, (h, w), with_mass=True)[1]]
            b = kernels.fused_reconstruct(fc[None], m, st, mode, 0.4, its, s_op, share=share)[0]
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(s_op.content.mean, s_ref.content.mean, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(s_op.content.var, s_ref.content.var, rtol=1e-4, atol=1e-3)
            assert s_op.share_host == pytest.approx(s_ref.share_host)
            if its:
                torch.testing.assert_close(s_op.linear_offset, s_ref.linear_offset)


def test_the_iterative_linear_form_is_refused_where_it_diverges():
    """reconstruct() itself refuses the paper's iteration at strength >= 0.5 (beta >= 1), where it
    returned an all-zero frame (one region) or an all-NaN one (two): only the CLI and the stylizer had
    guarded it."""
    fc, st = feats(8, 9, 11, 1), R.StyleStats.from_features(feats(8, 7, 7, 2, scale=3, shift=1))
    for s in (0.5, 0.7, 0.99):
        with pytest.raises(ValueError, match="converges only for strength below 0.5"):
            R.reconstruct(fc, None, st, "linear", s, iterations=500)
    out = R.reconstruct(fc, None, st, "linear", 0.45, iterations=500)
    assert torch.isfinite(out).all()


def test_strength_zero_is_the_content_even_with_a_warm_offset():
    """Strength 0 gives the content in every mode, also for the iterative form with 0 more iterations
    after a frame at another strength (it gave the content plus the previous frame's shift)."""
    from realtime import kernels
    fc, wc = feats(8, 9, 11, 1), soft_masks(9, 11, k=2)
    st = R.StyleStats.from_features(feats(8, 7, 7, 2, scale=3, shift=1), soft_masks(7, 7, k=2, seed=3))
    for fused in (False, True):
        state = R.ReconState(momentum=0.5)
        if fused:
            kernels.fused_reconstruct(fc[None], wc, st, "linear", 0.4, 30, state)
        else:
            R.reconstruct(fc, wc, st, "linear", 0.4, iterations=30, state=state)
        assert state.linear_offset is not None and state.linear_offset.abs().max() > 0.1     # a shift to carry
        if fused:
            out = kernels.fused_reconstruct(fc[None], wc, st, "linear", 0.0, 0, state)[0]
        else:
            out = R.reconstruct(fc, wc, st, "linear", 0.0, iterations=0, state=state)
        torch.testing.assert_close(out, fc)


def test_wct_takes_the_styles_square_root_once():
    """wct's C_s^{1/2} is the style's: computed once per style (StyleStats.cov_sqrt), not for every region
    of every frame, with the same result."""
    fc, wc = feats(16, 9, 11, 1), soft_masks(9, 11, k=2)
    st = R.StyleStats.from_features(feats(16, 12, 12, 2, scale=3, shift=1), soft_masks(12, 12, k=2, seed=3))
    want = R.wct(fc, wc, R.masked_stats(fc, wc, with_cov=True), st.stats, 0.9)       # computes its own
    calls = []
    real = R._sqrtm_pair
    try:
        R._sqrtm_pair = lambda c, eps: calls.append(tuple(c.shape)) or real(c, eps)
        for _ in range(3):
            out = R.reconstruct(fc, wc, st, "wct", 0.9)
    finally:
        R._sqrtm_pair = real
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)     # batched eigh: the last bits may differ
    assert calls.count((2, 16, 16)) == 1                            # the style's, batched, once
    assert calls.count((16, 16)) == 3 * 2                           # the content's, per frame and region


def test_a_region_with_almost_no_weight_pulls_gram_with_almost_no_force():
    """gram: each region's style term scaled by its share of the frame (full from 1 %): a second region of
    one pixel at weight 0.001 stalled the descent of the whole frame (its term, normalised by its own
    tiny mass, pushed that pixel to carry a whole Gram matrix), and a region whose mask had decayed to
    1e-4 pulled as if fully present."""
    C, h, w = 8, 10, 12
    g = torch.Generator().manual_seed(4)
    xc = torch.randn(C, h * w, generator=g).relu()
    gs = torch.stack([torch.eye(C) * 2.0, torch.eye(C) * 0.5])
    base = torch.zeros(2, h * w)
    base[0] = 1.0
    stray = base.clone()
    stray[1, 5], stray[0, 5] = 0.001, 0.999

    def err(wc):
        x = R.gram_descent(xc, xc, wc, gs, 10.0, 10)
        gk = (x * wc[0]) @ x.T / wc[0].sum()
        return float((gk - gs[0]).norm() / gs[0].norm()), x
    decayed = torch.stack([torch.full((h * w,), 1 - 1e-4), torch.full((h * w,), 1e-4)])   # a face's mask, left
    e_empty, x_empty = err(base)
    e_stray, _ = err(stray)
    _, x_decayed = err(decayed)
    full, R.GRAM_FULL_FRACTION = R.GRAM_FULL_FRACTION, 1e-12       # every region at full force: as before
    try:
        e_old, _ = err(stray)
        _, x_decayed_old = err(decayed)
    finally:
        R.GRAM_FULL_FRACTION = full
    assert e_empty < 0.5 and e_old > 2 * e_empty                    # the stray weight did stall the descent
    assert e_stray == pytest.approx(e_empty, rel=0.02)              # and no longer does
    # the decayed region pulled the frame as if present; now by its 1 % of full force
    moved = lambda x: float((x - x_empty).norm())                  # noqa: E731
    assert moved(x_decayed_old) > 0.1 * float(x_empty.norm()) and moved(x_decayed) < 0.05 * moved(x_decayed_old)
    cw = R.gram_region_weights(torch.stack([torch.full((h * w,), 0.98), torch.full((h * w,), 0.02)]))
    assert cw.tolist() == pytest.approx([1.0, 1.0])                 # 2 % of the frame: full force
    cw = R.gram_region_weights(torch.stack([torch.full((h * w,), 0.9999), torch.full((h * w,), 1e-4)]))
    assert float(cw[1]) == pytest.approx(0.01)


@pytest.mark.gpu
def test_on_the_gpu_regions_come_and_go_as_on_the_cpu():
    """On CUDA (the fused kernel for adain and linear, the kernel's moments for wct): a region leaving,
    coming back and one appearing give the CPU reference's outputs and state; nine regions, beyond the
    kernel's eight, fall back to the PyTorch path instead of failing."""
    from realtime import kernels
    assert kernels.available(), f"the fused kernel did not build: {kernels._ext_error}"
    h, w = 24, 32
    st = R.StyleStats.from_features(feats(16, 10, 10, 2, scale=2, shift=1), _two_regions(10, 10))
    st_gpu = R.StyleStats.from_features(feats(16, 10, 10, 2, scale=2, shift=1).cuda(), _two_regions(10, 10).cuda())
    seq = [(0, _without_region_1(h, w))] * 2 + _fading(h, w, (3, 5, 2)) + _fading(h, w, (2, 14, 2))
    for mode, its, s in (("adain", None, 0.8), ("linear", 6, 0.4), ("wct", None, 0.8)):
        s_cpu, s_gpu = R.ReconState(momentum=0.6), R.ReconState(momentum=0.6)
        for t, (there, m) in enumerate(seq):
            fc = _frame(h, w, there, 70 + t)
            a = R.reconstruct(fc, m, st, mode, s, iterations=its, state=s_cpu)
            b = R.reconstruct(fc.cuda(), m.cuda(), st_gpu, mode, s, iterations=its, state=s_gpu)
            torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(s_gpu.content.mean.cpu(), s_cpu.content.mean, rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(s_gpu.content.var.cpu(), s_cpu.content.var, rtol=1e-3, atol=1e-2)
            assert s_gpu.share_host == pytest.approx(s_cpu.share_host, rel=1e-5, abs=1e-7)
            if its:
                torch.testing.assert_close(s_gpu.linear_offset.cpu(), s_cpu.linear_offset, rtol=1e-4, atol=1e-3)
    nine = soft_masks(h, w, k=9)
    s9 = R.StyleStats.from_features(feats(16, 12, 12, 2).cuda(), soft_masks(12, 12, k=9, seed=1).cuda())
    for mode in ("adain", "wct"):
        out = R.reconstruct(feats(16, h, w, 1).cuda(), nine.cuda(), s9, mode, 0.8)
        assert out.is_cuda and torch.isfinite(out).all()
