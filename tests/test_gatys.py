"""The quality reference (realtime/gatys.py): its guided Gram matrices, its style targets, and that the
optimisation lowers its objective -- what benchmarks/quality.py measures every fast method against."""
import pytest
import torch

from realtime import gatys as G


@pytest.fixture(scope="module")
def encoder(hed_weights):
    from engines.weights import build_encoder
    return build_encoder("relu4_1", hed_weights)


def test_guided_grams_are_each_regions_weighted_second_moment():
    """guided_grams against an explicit sum over pixels: region k's Gram is sum_p w_k(p) f(p) f(p)^T over
    sum_p w_k(p), divided by C (masks given at another size are area-averaged to the features')."""
    g = torch.Generator().manual_seed(1)
    feat = torch.rand(1, 5, 6, 8, generator=g)
    masks = torch.rand(2, 12, 16, generator=g)
    masks = masks / masks.sum(0, keepdim=True)
    small = torch.nn.functional.avg_pool2d(masks[None], 2)[0]                  # area average to 6 x 8
    want = torch.zeros(2, 5, 5)
    for k in range(2):
        for i in range(6):
            for j in range(8):
                v = feat[0, :, i, j]
                want[k] += small[k, i, j] * torch.outer(v, v)
        want[k] /= small[k].sum() * 5
    torch.testing.assert_close(G.guided_grams(feat, masks), want)


def test_a_region_missing_from_the_painting_takes_its_global_gram(encoder):
    g = torch.Generator().manual_seed(2)
    style = torch.rand(1, 3, 40, 48, generator=g)
    masks = torch.zeros(2, 40, 48)
    masks[0] = 1.0                                       # region 1 absent from the painting
    got = G.style_targets(encoder, style, masks)
    whole = G.style_targets(encoder, style, torch.ones(1, 40, 48))
    for name in G.STYLE_LAYERS:
        torch.testing.assert_close(got[name][1], whole[name][0])
        torch.testing.assert_close(got[name][0], whole[name][0])       # region 0 is the whole painting
    masks[1, :20] = 1.0                                  # present: its own Gram, not the global one
    masks[0, :20] = 0.0
    own = G.style_targets(encoder, style, masks)
    assert not torch.allclose(own["relu1_1"][1], whole["relu1_1"][0], rtol=1e-3)


def test_the_optimisation_lowers_its_objective_and_honours_the_regions(encoder):
    """20 L-BFGS steps lower content + weighted style loss below the start's; with two regions whose
    paintings differ, each region moves towards its own painting's statistics."""
    g = torch.Generator().manual_seed(3)
    content = torch.rand(1, 3, 48, 48, generator=g) * 0.5 + 0.25
    dark, bright = torch.full((1, 3, 48, 24), 0.1), torch.full((1, 3, 48, 24), 0.9)
    style = torch.cat([dark, bright], 3) + torch.rand(1, 3, 48, 48, generator=g) * 0.1
    masks = torch.zeros(2, 48, 48)
    masks[0, :, :24], masks[1, :, 24:] = 1.0, 1.0
    with torch.no_grad():
        c_feat = encoder(content, taps=(G.CONTENT_LAYER,))[G.CONTENT_LAYER]
    s_grams = G.style_targets(encoder, style, masks)

    def objective(x):
        with torch.no_grad():
            cl, sl = G.gatys_loss_terms(encoder, x, c_feat, s_grams, masks)
        return float(cl + 5.0 * sl)
    out = G.gatys(encoder, content, style, masks, masks, iterations=20, style_weight=5.0, progress=False)
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert objective(out) < 0.85 * objective(content)
    left, right = out[..., :24].mean(), out[..., 24:].mean()
    assert float(right - left) > 0.1                 # the bright painting's side came out brighter
