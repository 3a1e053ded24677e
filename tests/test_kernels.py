"""The fused masked-reconstruction op: its two-pass formulation against reconstruct()'s reference,
a compile-only build of the CUDA code where nvcc exists, and the CUDA kernel against the CPU
reference where a GPU exists."""
import os

import pytest
import torch

from realtime import kernels
from realtime import reconstruct as R


@pytest.fixture(autouse=True)
def _cuda_ops_loaded(request):
    """GPU tests call the ops' CUDA implementations, which exist once the extension is built and loaded."""
    if "gpu" in request.keywords and torch.cuda.is_available():
        kernels.build_extension()


def case(K, C, h, w, seed, dtype=torch.float32, scale=1.0, empty=None):
    g = torch.Generator().manual_seed(seed)
    f = (torch.randn(1, C, h, w, generator=g) * 3 + 1).relu() * scale
    m = torch.rand(K, h, w, generator=g) ** 3
    if empty is not None and K > 1:
        m[empty] = 0
    m = m / m.sum(0, keepdim=True)
    fs = (torch.randn(C, 13, 11, generator=g) * 2 + 2).relu() * scale
    ms = torch.rand(K, 13, 11, generator=g)
    ms = ms / ms.sum(0, keepdim=True)
    return f.to(dtype), m, R.StyleStats.from_features(fs, ms)


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("mode,iterations", [("linear", None), ("linear", 40), ("adain", None)])
def test_two_pass_op_equals_reference_reconstruction(K, mode, iterations):
    f, m, st = case(K, 16, 9, 13, K, empty=K - 1)
    alpha = 0.4 if iterations else 0.8
    ref = R.reconstruct(f, m, st, mode, alpha, iterations=iterations, use_kernel=False)
    fused = kernels.fused_reconstruct(f, m, st, mode, alpha, iterations)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode,iterations", [("linear", None), ("linear", 7), ("adain", None), ("wct", None),
                                              ("gram", 3), ("patchswap", None)])
def test_floor_raises_results_below_it_in_every_mode(mode, iterations):
    """reconstruct(floor=0) equals the unfloored result clamped at zero, in every mode, and the fused
    op's reference does the same in its second pass (on a GPU, the kernel's clamp; tested below)."""
    g = torch.Generator().manual_seed(5)
    f = torch.rand(1, 16, 9, 13, generator=g) * 6 + 0.5             # bright content, dim style:
    fs = torch.rand(16, 11, 7, generator=g) * 0.1                   # linear/wct pull features below zero
    m = torch.rand(2, 9, 13, generator=g)
    m = m / m.sum(0, keepdim=True)
    st = R.StyleStats.from_features(fs, torch.stack([torch.ones(11, 7), torch.zeros(11, 7)]))
    alpha = 0.45 if (mode, iterations) == ("linear", 7) else 1.0    # the iteration converges below 0.5 only
    raw = R.reconstruct(f, m, st, mode, alpha, iterations=iterations, use_kernel=False)
    got = R.reconstruct(f, m, st, mode, alpha, iterations=iterations, use_kernel=False, floor=0.0)
    torch.testing.assert_close(got, raw.clamp_min(0))
    if mode == "linear":
        assert float(raw.min()) < 0            # the floor had something to do
    if mode in ("linear", "adain"):
        fused = kernels.fused_reconstruct(f, m, st, mode, alpha, iterations, floor=0.0)
        torch.testing.assert_close(fused, raw.clamp_min(0), rtol=1e-4, atol=1e-3)


def test_reference_ops_match_the_statistics_and_keep_channels_last():
    f, m, _ = case(3, 8, 7, 5, 1)
    s1, s2, ws = torch.ops.stylecam.masked_moments(f, m)
    st = R.masked_stats(f[0], m)
    torch.testing.assert_close(s1 / ws[:, None], st.mean)
    torch.testing.assert_close(ws, m.reshape(3, -1).sum(1))
    cl = f.contiguous(memory_format=torch.channels_last)
    out = torch.ops.stylecam.masked_affine(cl, m, torch.ones(3, 8), torch.zeros(3, 8))
    torch.testing.assert_close(out, f)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_warm_start_over_several_frames_matches_reference():
    st_ref, st_fused = R.ReconState(momentum=0.5), R.ReconState(momentum=0.5)
    for t in range(4):
        f, m, st = case(3, 8, 11, 7, 100 + t)
        if t == 0:
            style = st
        a = R.reconstruct(f, m, style, "linear", 0.45, iterations=3, state=st_ref, use_kernel=False)
        b = kernels.fused_reconstruct(f, m, style, "linear", 0.45, 3, st_fused)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)


def test_fp16_features_near_the_limit_stay_finite():
    f, m, st = case(2, 8, 9, 9, 3, scale=2000.0)      # values up to ~3e4: their squares overflow FP16
    f = f.clamp(max=60000).half()
    out = kernels.fused_reconstruct(f, m, st, "adain", 1.0)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


# ---------------------------------------------------------------- CUDA code

NVCC = kernels.cuda_home()


@pytest.mark.skipif(NVCC is None, reason="no CUDA toolkit (nvcc) on this machine: compile-only test skipped")
@pytest.mark.skipif(torch.version.cuda is None, reason="PyTorch is a CPU build: cannot build CUDA extensions")
def test_cuda_kernel_compiles_and_links(tmp_path, monkeypatch):
    """Compile-only (no GPU needed): the .cu file builds and links against this torch."""
    monkeypatch.setenv("STYLECAM_CACHE", os.environ.get("STYLECAM_CACHE", str(tmp_path)))
    ext = kernels.build_extension()
    assert ext is not None
    assert (kernels.SOURCE).exists()
    # every variant name maps onto fields the extension takes (set_tuning needs no GPU) ...
    try:
        for layout in kernels.MOMENTS_LAYOUTS:
            for suffix in ("", "+solve1", "+pdl", "+pdl+early") + (("+even", "+even+solve1+pdl", "+even+fill")
                                                                    if layout != "warp" else ()):
                kernels.set_tuning(layout + suffix)
        kernels.set_tuning("auto+solve1")
        kernels.set_tuning("auto+l2")
        kernels.set_tuning("quad+l2")
        kernels.set_tuning("auto+p256")
        for v in ("auto+rev", "quad+rev", "auto+early+rev", "auto+p256+rev", "quad+solve1+rev"):
            kernels.set_tuning(v)
        # ... and the extension refuses combinations no kernel is built for, changing nothing
        for bad in ({"lanes": False, "prefetch": True, "lpc": 1, "tile_div": 1},
                    {"lanes": False, "prefetch": False, "lpc": 4, "tile_div": 1},
                    {"lanes": False, "prefetch": False, "lpc": 1, "tile_div": 2},
                    {"lanes": True, "prefetch": True, "lpc": 4, "tile_div": 2},
                    {"lanes": True, "prefetch": True, "lpc": 1, "tile_div": 1},
                    {"lanes": True, "prefetch": False, "lpc": 1, "tile_div": 2},
                    {"lanes": True, "prefetch": False, "lpc": 8, "tile_div": 1},
                    {"lanes": True, "prefetch": False, "lpc": 2, "tile_div": 1}):
            assert ext.set_tuning(**bad, even=False, solve_in_pass2=True) is False, bad
        assert ext.set_tuning(lanes=False, prefetch=False, lpc=1, tile_div=1, even=True, solve_in_pass2=True) is False
        assert ext.set_tuning(lanes=True, prefetch=False, lpc=4, tile_div=1, even=True, solve_in_pass2=True,
                              pdl=False, early=True) is False      # +early needs +pdl
        assert ext.set_tuning(lanes=True, prefetch=False, lpc=4, tile_div=1, even=False, solve_in_pass2=True,
                              fill=True) is False                  # +fill needs +even
        for layout in ("warp", "lanes1", "prefetch2", "quadpf"):        # +l2 and +p256 are built for quad only
            for hint in ({"l2": True}, {"p256": True}):
                assert ext.set_tuning(**kernels.MOMENTS_LAYOUTS[layout], even=layout != "warp", solve_in_pass2=True,
                                      **hint) is False, (layout, hint)
        assert ext.set_tuning(**kernels.MOMENTS_LAYOUTS["quad"], even=True, solve_in_pass2=True, l2=True,
                              p256=True) is False                  # not both
        for layout in ("warp", "lanes1", "prefetch2", "quadpf"):        # +rev: pass 2 in quad's layout only
            assert ext.set_tuning(**kernels.MOMENTS_LAYOUTS[layout], even=layout != "warp", solve_in_pass2=True,
                                  rev=True) is False, layout
        assert ext.set_tuning(**kernels.MOMENTS_LAYOUTS["quad"], even=True, solve_in_pass2=True, l2=True,
                              rev=True) is False                   # +rev has no +l2 hints
    finally:
        kernels.set_tuning()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("K", [1, 2, 3, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_kernel_matches_cpu_reference(dtype, K, channels_last):
    f, m, st = case(K, 64, 37, 53, K, empty=K - 1)
    fc = f.to(dtype)
    ref_mom = kernels.moments_reference(fc, m)
    g = fc.cuda()
    if channels_last:
        g = g.contiguous(memory_format=torch.channels_last)
    mom = torch.ops.stylecam.masked_moments(g, m.cuda())
    for a, b in zip(mom, ref_mom):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-2)
    A, B = torch.rand(K, 64) + 0.5, torch.randn(K, 64)
    out = torch.ops.stylecam.masked_affine(g, m.cuda(), A.cuda(), B.cuda())
    ref = kernels.affine_reference(fc, m, A, B)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float().cpu(), ref.float(), rtol=tol, atol=tol * 10)


@pytest.mark.gpu
def test_cuda_reconstruct_uses_the_kernel_and_matches_cpu_over_frames():
    assert kernels.available()
    s_cpu, s_gpu = R.ReconState(momentum=0.6), R.ReconState(momentum=0.6)
    f0, m0, style = case(3, 32, 21, 17, 0)
    style_gpu = R.StyleStats(R.RegionStats(*(t.cuda() if t is not None else None for t in
                                              (style.stats.weight, style.stats.mean, style.stats.var, style.stats.cov))),
                             style.features.cuda(), style.masks.cuda(), style.fallback)
    for t in range(5):
        f, m, _ = case(3, 32, 21, 17, 10 + t)
        a = R.reconstruct(f, m, style, "linear", 0.4, iterations=500, state=s_cpu)
        b = R.reconstruct(f.cuda(), m.cuda(), style_gpu, "linear", 0.4, iterations=500, state=s_gpu)
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
def test_cuda_kernel_fp16_near_limit_and_odd_sizes():
    f, m, st = case(5, 32, 1, 97, 7, scale=2000.0)
    g = f.clamp(max=60000).half().cuda()
    mom = torch.ops.stylecam.masked_moments(g, m.cuda())
    assert all(torch.isfinite(t).all() for t in mom)
    ref = kernels.moments_reference(g.cpu(), m)
    torch.testing.assert_close(mom[1].cpu(), ref[1], rtol=1e-3, atol=1.0)


@pytest.fixture(params=["auto", "auto+solve1", "warp", "lanes1", "prefetch2", "quad", "lanes1+even",
                        "prefetch2+even+solve1", "quadpf", "quadpf+even", "quad+even", "quad+even+solve1", "warp+pdl",
                        "auto+early", "auto+solve1+early", "auto+fill", "prefetch2+even+fill", "auto+l2",
                        "quad+solve1+l2", "auto+p256", "auto+early+l2", "auto+early+p256", "auto+rev", "quad+rev",
                        "quad+even+solve1+rev", "auto+early+rev", "auto+fill+early+p256+rev"])
def moments_layout(request):
    """Every layout of pass 1 (kernels.set_tuning; the default set back afterwards)."""
    kernels.set_tuning(request.param)
    yield request.param
    kernels.set_tuning()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_fused_op_matches_cpu_reference_over_frames(dtype, K, channels_last, moments_layout):
    """The one-call op (memset, pass 1, the solve, pass 2): every mode, an empty region, warm start (smoothing and the iterative offset) carried
    over three frames, at sizes with several pixel tiles and channel groups: odd ones (every pixel
    through the strides) and 45 x 120, whose H*W is a multiple of 8 (NCHW then takes the 16-byte
    vector path, with runs across rows).  The second frame is floored at zero (the stylizer's clamp)."""
    if channels_last and moments_layout not in ("auto", "auto+solve1", "quad+even", "auto+early", "auto+l2", "auto+p256",
                                                       "auto+early+l2", "auto+early+p256", "auto+rev"):
        pytest.skip("channels_last features take the strided pass 1 whatever the vector-path layout")
    kernels.set_tuning(moments_layout)
    tol = {torch.float32: 2e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]
    for code, iters in ((0, 0), (1, 37), (2, 0)):
        prev_cpu = prev_gpu = None
        for t in range(3):
            h, w = [(67, 45), (45, 120), (67, 301)][t]
            f, m, st = case(K, 96, h, w, 100 * K + t, empty=K - 1)
            fc = f.to(dtype)
            g = fc.cuda()
            if channels_last:
                g = g.contiguous(memory_format=torch.channels_last)
            alpha = 0.45 if code == 1 else 0.8
            extra_cpu = prev_cpu if prev_cpu is not None else (None, None, None)
            extra_gpu = prev_gpu if prev_gpu is not None else (None, None, None)
            floor = 0.0 if t == 1 else None
            ref = torch.ops.stylecam.fused_recon(fc, m, st.stats.mean, st.stats.std, alpha, code, iters, 0.5, *extra_cpu,
                                                 floor)
            got = torch.ops.stylecam.fused_recon(g, m.cuda(), st.stats.mean.cuda(), st.stats.std.cuda(), alpha, code,
                                                 iters, 0.5, *extra_gpu, floor)
            assert got[0].dtype == dtype and got[0].shape == g.shape and got[0].stride() == g.stride()
            for a, b in zip(got[1:], ref[1:]):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-3)
            torch.testing.assert_close(got[0].float().cpu(), ref[0].float(), rtol=tol, atol=tol * 10)
            prev_cpu = (ref[2], ref[3], ref[4] if code == 1 else None)
            prev_gpu = (got[2], got[3], got[4] if code == 1 else None)


BAD_INPUT = """
import sys, torch
sys.path.insert(0, {root!r})
from realtime import kernels
kernels.build_extension()
f, m = torch.rand(1, 8, 5, 7, device="cuda"), torch.full((3, 5, 7), 1 / 3, device="cuda")
mean, std = torch.zeros(3, 8), torch.ones(3, 8)
for args, want in (((f, m[:, :4].contiguous(), mean, std, 1.0, 0, 0, 0.0), "K x H x W"),
                   ((f, m, mean, std, 1.0, 1, 5, 0.0), "strength in"),
                   ((f, m, mean[:2], std, 1.0, 0, 0, 0.0), "style_mean must be K x C")):
    try:
        torch.ops.stylecam.fused_recon(*args, None, None, None)
        print("no error for", want); sys.exit(3)
    except RuntimeError as e:
        assert want in str(e), str(e)
print("all rejected")
"""


@pytest.mark.gpu
def test_cuda_fused_op_rejects_bad_input():
    """The op's own checks raise RuntimeError with a clear message (in a child process, so that a
    crash in the error path is reported as a failure instead of ending the test run)."""
    import subprocess
    import sys
    from pathlib import Path
    code = BAD_INPUT.format(root=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "all rejected" in r.stdout, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])


def test_fused_op_cpu_reference_carries_the_warm_start():
    """CPU: the op given a ReconState's rows (statistics and the iterative offset) equals reconstruct()
    with that state, and hands back the mix 0.5 * previous + 0.5 * current of the statistics it used."""
    s_ref = R.ReconState(momentum=0.5)
    prev = (None, None, None)
    for t in range(3):
        f, m, st = case(3, 16, 9, 13, 50 + t)
        out, ws, mean, var, off = torch.ops.stylecam.fused_recon(f, m, st.stats.mean, st.stats.std, 0.45, 1, 25,
                                                                 0.5, *prev)
        want = R.reconstruct(f, m, st, "linear", 0.45, iterations=25, state=s_ref, use_kernel=False)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-4)
        cur = R.masked_stats(f[0], m).mean
        torch.testing.assert_close(mean, cur if prev[0] is None else 0.5 * prev[0] + 0.5 * cur)
        prev = (s_ref.content.mean, s_ref.content.var, s_ref.linear_offset)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("K", [1, 3, 4, 5, 8])
def test_cuda_vector_path_and_misaligned_input_match_reference(dtype, K, moments_layout):
    """Both passes on their 16-byte vector path (NCHW, H*W a multiple of 8, many tiles and channel
    groups, a partial last tile), the same data 2 bytes off alignment (strided path), and aligned
    features with masks 4 bytes off alignment (every layout stages its masks through scalar loads).
    200 channels: the last group of 32 is partial (8 channels), which the lane layouts guard."""
    f, m, st = case(K, 200, 96, 136, 7 * K, empty=K - 1)
    fc = f.to(dtype)
    A, B = torch.rand(K, 200) + 0.5, torch.randn(K, 200)
    ref_mom = kernels.moments_reference(fc, m)
    ref = kernels.affine_reference(fc, m, A, B)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    flat = torch.empty(fc.numel() + 1, dtype=dtype, device="cuda")
    mflat = torch.empty(m.numel() + 1, device="cuda")
    m_off = mflat[1:].view_as(m).copy_(m.cuda())
    assert m_off.is_contiguous() and m_off.data_ptr() % 16 == 4
    for g, mg in ((fc.cuda(), m.cuda()), (flat[1:].view_as(fc).copy_(fc.cuda()), m.cuda()), (fc.cuda(), m_off)):
        mom = torch.ops.stylecam.masked_moments(g, mg)
        for a, b in zip(mom, ref_mom):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-2)
        out = torch.ops.stylecam.masked_affine(g, mg, A.cuda(), B.cuda())
        torch.testing.assert_close(out.float().cpu(), ref.float(), rtol=tol, atol=tol * 10)


def test_fused_reconstruct_rejects_bad_input_with_clear_errors():
    """CPU and GPU alike: the Python wrapper refuses bad shapes before any op runs."""
    f, m, st = case(3, 8, 5, 7, 0)
    with pytest.raises(ValueError, match="K x H x W"):
        kernels.fused_reconstruct(f, m[:, :4].contiguous(), st, "adain", 1.0)
    with pytest.raises(ValueError, match="1 x C x H x W"):
        kernels.fused_reconstruct(f[0], m, st, "adain", 1.0)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        kernels.fused_reconstruct(f.double(), m, st, "adain", 1.0)
    with pytest.raises(ValueError, match="regions x channels"):
        kernels.fused_reconstruct(f[:, :4], m, st, "adain", 1.0)
    with pytest.raises(ValueError, match="strength in"):
        kernels.fused_reconstruct(f, m, st, "linear", 1.0, iterations=5)
    with pytest.raises(ValueError, match="covers linear and adain"):
        kernels.fused_reconstruct(f, m, st, "wct", 1.0)


def test_masked_stats_from_the_ops_sums_equal_the_reference():
    """wct and gram take their statistics from the kernel's first pass on a GPU: the same numbers
    (here through the op's CPU implementation), covariance included."""
    f, m, _ = case(3, 16, 9, 13, 4, empty=2)
    sums = torch.ops.stylecam.masked_moments(f, m)
    a = R.masked_stats(f[0], m, with_cov=True, sums=sums)
    b = R.masked_stats(f[0], m, with_cov=True)
    for x, y in ((a.weight, b.weight), (a.mean, b.mean), (a.var, b.var), (a.cov, b.cov)):
        torch.testing.assert_close(x, y)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["wct", "gram"])
def test_cuda_wct_and_gram_with_the_kernels_statistics_match_cpu(mode):
    f, m, style = case(3, 32, 21, 17, 3)
    style_gpu = R.StyleStats(R.RegionStats(*(t.cuda() if t is not None else None for t in
                                              (style.stats.weight, style.stats.mean, style.stats.var, style.stats.cov))),
                             style.features.cuda(), style.masks.cuda(), style.fallback)
    a = R.reconstruct(f, m, style, mode, 0.7)
    b = R.reconstruct(f.cuda(), m.cuda(), style_gpu, mode, 0.7)
    torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ops_pass_torch_library_opcheck(device):
    """The ops' schemas, fake (meta) implementations and autograd registration agree with what the
    implementations do (torch.library.opcheck: schema, fake tensor, AOT dispatch), on the CPU
    reference and, on a GPU, the CUDA op; the optional floor and warm-start arguments included."""
    f, m, st = case(3, 8, 7, 5, 1)
    d = lambda t: t.to(device)  # noqa: E731
    f, m, mean, std, var = d(f), d(m), d(st.stats.mean), d(st.stats.std), d(st.stats.var)
    for args in ((f, m, mean, std, 0.8, 2, 0, 0.5, None, None, None, 0.0),
                 (f, m, mean, std, 0.45, 1, 5, 0.5, mean, var, d(torch.zeros(3, 8)), None)):
        res = torch.library.opcheck(torch.ops.stylecam.fused_recon.default, args)
        assert set(res.values()) == {"SUCCESS"}, res
    assert set(torch.library.opcheck(torch.ops.stylecam.masked_moments.default, (f, m)).values()) == {"SUCCESS"}
    assert set(torch.library.opcheck(torch.ops.stylecam.masked_affine.default,
                                     (f, m, d(torch.rand(3, 8)), d(torch.rand(3, 8)))).values()) == {"SUCCESS"}


def test_kernel_variant_names_parse_and_unknown_ones_are_refused():
    """Kernel variants (benchmarks/kernel.py --moments, STYLECAM_MOMENTS, the GPU tests): a pass-1
    layout, optionally with +even (blocks filling whole waves) and +solve1 (the between-pass solve as a
    kernel of its own; by default it runs in pass 2's prologue)."""
    V = kernels.Variant
    assert kernels.parse_variant("auto") == V("quad", True, True, True, False, False) == kernels.parse_variant(kernels.DEFAULT_VARIANT)
    assert kernels.parse_variant("auto+solve1") == V("quad", False, True, True, False, False)
    assert kernels.parse_variant("auto+early") == V("quad", True, True, True, True, False)
    assert kernels.parse_variant("auto+fill+early") == V("quad", True, True, True, True, True)
    assert kernels.parse_variant("auto+l2") == V("quad", True, True, True, False, False, True)
    assert kernels.parse_variant("quad+solve1+l2") == V("quad", False, False, False, False, False, True)
    assert kernels.parse_variant("auto").l2 is False
    assert kernels.parse_variant("auto+p256") == V("quad", True, True, True, False, False, False, True)
    assert kernels.parse_variant("auto").p256 is False
    assert kernels.parse_variant("auto+rev") == V("quad", True, True, True, False, False, False, False, True)
    assert kernels.parse_variant("quad+solve1+p256+rev") == V("quad", False, False, False, False, False, False, True, True)
    assert kernels.parse_variant("auto").rev is False
    assert kernels.parse_variant("quad+even") == V("quad", True, True, False, False, False)
    assert kernels.parse_variant("warp+solve1+pdl") == V("warp", False, False, True, False, False)
    assert kernels.parse_variant("prefetch2+solve1") == V("prefetch2", False, False, False, False, False)
    assert kernels.parse_variant("quad") == V("quad", True, False, False, False, False)
    assert kernels.parse_variant("lanes1+solve1+even") == V("lanes1", False, True, False, False, False)
    assert set(kernels.MOMENTS_LAYOUTS) == {"warp", "lanes1", "prefetch2", "quad", "quadpf"}
    for bad in ("prefetch1", "auto+solve2", "auto+solve3", "+solve1", "solve1", "warp+even", "quad+even+even",
                "auto+even", "auto+pdl", "octet", "lanes2", "lanes4", "quad+pdl+pdl", "pdl", "quad+early",
                "quad+even+early", "early", "quad+fill", "warp+fill", "auto+fill+fill", "lanes1+l2", "quadpf+l2",
                "warp+l2", "prefetch2+even+l2", "auto+l2+l2", "l2", "lanes1+p256", "quadpf+p256", "auto+l2+p256",
                "p256", "rev", "lanes1+rev", "quadpf+even+rev", "warp+rev", "auto+l2+rev", "auto+rev+rev"):
        with pytest.raises(ValueError, match="unknown kernel variant"):
            kernels.parse_variant(bad)


def test_an_unavailable_kernel_is_said_once_not_every_frame(monkeypatch, caplog):
    """With a GPU but no CUDA toolkit (or a Windows one), available() used to retry the build and log its
    warning on every reconstruction; the first failure is remembered."""
    calls = []

    def no_toolkit(verbose=False):
        calls.append(1)
        raise RuntimeError("no CUDA toolkit (nvcc) found")
    monkeypatch.setattr(kernels, "_ext_error", None)
    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "build_extension", no_toolkit)
    with caplog.at_level("WARNING"):
        assert not kernels.available() and not kernels.available() and not kernels.available()
    assert len(calls) == 1 and caplog.text.count("fused CUDA kernel unavailable") == 1
