"""The output deflicker (realtime/deflicker.py): it removes frame-to-frame noise where the scene is
still or moves with the flow, passes new content through untouched, and never drags the previous
frame across a cut."""
import cv2
import numpy as np
import pytest

from realtime.deflicker import Deflicker


def texture(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.resize((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (5, 5), 1.0)


def shift(img, dx):
    return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, 0]]), img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


def noisy(img, rng, sigma=12.0):
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def err(a, b, margin=12):
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.abs(d[margin:-margin, margin:-margin]).mean())


class NoMotion(Deflicker):
    """The same filter with its flow forced to zero: what blending without motion compensation does."""
    def flow(self, grey, prev_grey):
        return np.zeros(grey.shape + (2,), np.float32)


def test_still_scene_noise_is_averaged_away():
    rng = np.random.default_rng(1)
    frame, clean = texture(), texture(seed=5)            # the input, and the "stylised" output
    d = Deflicker(0.6)
    raw_steps, out_steps, prev_raw, prev_out = [], [], None, None
    for _ in range(12):
        raw = noisy(clean, rng)
        out = d(frame, raw)
        if prev_raw is not None:
            raw_steps.append(err(raw, prev_raw))
            out_steps.append(err(out, prev_out))
        prev_raw, prev_out = raw, out
    assert np.mean(out_steps[3:]) < 0.6 * np.mean(raw_steps[3:])
    assert err(out, clean) < 0.75 * err(raw, clean)


def test_moving_scene_is_followed_without_ghosting():
    """A pattern moving 2 px a frame: the motion-compensated blend stays on the current frame's
    output (closer to it than the noisy output itself); the same blend without motion compensation
    drags the previous frames along (ghosting)."""
    rng = np.random.default_rng(2)
    base_in, base_out = texture(seed=3), texture(seed=4)
    d, d0 = Deflicker(0.6), NoMotion(0.6)
    for t in range(8):
        frame, clean = shift(base_in, 2 * t), shift(base_out, 2 * t)
        raw = noisy(clean, rng)
        out, out0 = d(frame, raw), d0(frame, raw)
    assert err(out, clean) < err(raw, clean)
    assert err(out, clean) < 0.7 * err(out0, clean)


def test_new_content_and_cuts_pass_through_unchanged():
    rng = np.random.default_rng(3)
    d = Deflicker(0.8)
    a_in, a_out = texture(seed=10), texture(seed=11)
    d(a_in, a_out)
    b_in, b_out = texture(seed=12), noisy(texture(seed=13), rng)      # a different scene
    res = d(b_in, b_out)
    assert np.abs(res.astype(int) - b_out.astype(int)).mean() < 1.0
    d(a_in, a_out)
    d.reset()                                         # a reset (scene cut, style switch): start afresh
    c_out = noisy(a_out, rng)
    assert np.array_equal(d(a_in, c_out), c_out)
    small = d(a_in[:64, :64].copy(), a_out[:64, :64].copy())    # a size change starts afresh too
    assert np.array_equal(small, a_out[:64, :64])


def test_flow_is_estimated_small_and_scaled_to_the_frame():
    """Large frames: the flow comes from a downscaled pair and is scaled back (a 6 px shift of a
    1200-px-wide frame is found as about 6 px)."""
    big_in = cv2.resize(texture(seed=7), (1200, 900), interpolation=cv2.INTER_CUBIC)
    moved = shift(big_in, 6)
    d = Deflicker(0.5)
    fl = d.flow(cv2.cvtColor(moved, cv2.COLOR_BGR2GRAY), cv2.cvtColor(big_in, cv2.COLOR_BGR2GRAY))
    assert fl.shape == (900, 1200, 2)
    inner = fl[100:-100, 100:-100]
    assert abs(float(np.median(inner[..., 0])) + 6) < 1.0 and abs(float(np.median(inner[..., 1]))) < 1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="strength"):
        Deflicker(1.0)
    with pytest.raises(ValueError, match="tolerance"):
        Deflicker(0.5, tol=0)
    with pytest.raises(ValueError, match="same H x W x 3"):
        Deflicker(0.5)(texture(), texture()[:10])


def _clip(n=8, seed=6):
    rng = np.random.default_rng(seed)
    base_in, base_out = texture(seed=seed), texture(seed=seed + 1)
    for t in range(n):
        yield shift(base_in, 2 * t), noisy(shift(base_out, 2 * t), rng)


def _as_tensor(img, device="cpu"):
    import torch
    return torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)


def test_device_version_matches_the_opencv_version():
    """TorchDeflicker (the GPU path; here on CPU tensors) against Deflicker, the OpenCV reference,
    frame by frame on a moving, noisy clip: the same filter to within rounding (OpenCV warps with
    5-bit fixed-point weights and rounds the mismatch and the blend to 8 bits)."""
    from realtime.deflicker import TorchDeflicker
    ref, dev = Deflicker(0.6), TorchDeflicker(0.6)
    dev.FLOW_SIDE = ref.FLOW_SIDE               # the same flow for both
    diffs = []
    for frame, out in _clip():
        a = ref(frame, out).astype(np.float32)
        b = dev(frame, _as_tensor(frame), _as_tensor(out))
        b = (b[0].permute(1, 2, 0).numpy() * 255.0)
        diffs.append(np.abs(a - b)[8:-8, 8:-8])
    d = np.stack(diffs)
    assert d.mean() < 0.75 and np.percentile(d, 99) < 4.0, (d.mean(), np.percentile(d, 99))
    dev.reset()
    frame, out = next(_clip())
    first = dev(frame, _as_tensor(frame), _as_tensor(out))
    assert np.array_equal((first[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), out)
    with pytest.raises(ValueError, match="same H x W"):
        dev(frame, _as_tensor(frame)[..., :10], _as_tensor(out))


@pytest.mark.gpu
def test_device_version_on_cuda_equals_it_on_the_cpu():
    from realtime.deflicker import TorchDeflicker
    cpu, gpu = TorchDeflicker(0.6), TorchDeflicker(0.6)
    for frame, out in _clip():
        a = cpu(frame, _as_tensor(frame), _as_tensor(out))
        b = gpu(frame, _as_tensor(frame, "cuda"), _as_tensor(out, "cuda"))
        assert b.is_cuda
        assert float((a - b.cpu()).abs().max()) < 1e-4


def test_device_version_computes_the_flow_off_the_main_thread_with_the_same_result():
    """start(frame) before the networks run puts the optical flow on a worker thread (the GPU path
    overlaps it with the GPU's work); the outputs are the same as with the flow computed in line,
    a frame other than the started one is still handled right, and a reset in between forgets the
    started flow."""
    import threading
    from realtime.deflicker import TorchDeflicker
    inline, overlapped = TorchDeflicker(0.6), TorchDeflicker(0.6)
    threads = []
    job = overlapped._flow_job
    overlapped._flow_job = lambda *a: (threads.append(threading.current_thread().name), job(*a))[1]
    frames = list(_clip())
    for i, (frame, out) in enumerate(frames):
        a = inline(frame, _as_tensor(frame), _as_tensor(out))
        overlapped.start(frames[i - 1][0] if i == 3 else frame)     # frame 3: started for the wrong frame
        b = overlapped(frame, _as_tensor(frame), _as_tensor(out))
        assert np.array_equal(a.numpy(), b.numpy()), i
    assert threads.count("MainThread") == 1 and len(threads) == len(frames) + 1
    assert all(t.startswith("stylecam-flow") for t in threads if t != "MainThread")
    frame, out = frames[1]
    overlapped.start(frame)
    overlapped.reset()                                  # e.g. a scene cut: no previous output to blend
    first = overlapped(frame, _as_tensor(frame), _as_tensor(out))
    assert np.array_equal((first[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), out)


def _sizes_clip():
    """A moving, noisy clip whose frame size changes twice (a camera reconnecting at another resolution):
    three frames of 96x128, three of 97x129 (one pixel more: the flow's reduced frame keeps its size, see
    below), two of 80x120; as (input, output) pairs."""
    rng = np.random.default_rng(8)
    clip = []
    for (h, w), n, seed in (((96, 128), 3, 20), ((97, 129), 3, 22), ((80, 120), 2, 24)):
        base_in, base_out = texture(h, w, seed=seed), texture(h, w, seed=seed + 1)
        clip.append([(shift(base_in, 2 * t), noisy(shift(base_out, 2 * t), rng)) for t in range(n)])
    return clip


@pytest.mark.parametrize("kind", ["opencv", "torch"])
def test_a_size_change_starts_the_filter_afresh_and_it_then_works_at_the_new_size(kind):
    """The filter caches per-size state (Deflicker's sampling grid, TorchDeflicker's identity grid). Across
    a size change it must equal a fresh filter run on each stretch of one size, frame for frame: the first
    frame of a new size passes unchanged, and the following ones are blended with the warps of their own size
    (a grid kept from the first size would not broadcast, or would sample the wrong pixels). The flow is
    estimated at most 40 px large here, so that 96x128 and 97x129 have the same reduced size (24x32): a flow
    between two frames of different sizes can then be computed, and must still not be used."""
    from realtime.deflicker import TorchDeflicker

    def filt():
        d = Deflicker(0.6) if kind == "opencv" else TorchDeflicker(0.6)
        d.FLOW_SIDE = 40
        return d

    def run(d, frame, out):
        if kind == "opencv":
            return d(frame, out)
        return (d(frame, _as_tensor(frame), _as_tensor(out))[0].permute(1, 2, 0).numpy() * 255.0).round()

    d = filt()
    assert d.reduce(np.zeros((96, 128), np.uint8)).shape == d.reduce(np.zeros((97, 129), np.uint8)).shape
    for stretch in _sizes_clip():
        fresh = filt()
        for i, (frame, out) in enumerate(stretch):
            got, want = run(d, frame, out).astype(float), run(fresh, frame, out).astype(float)
            assert got.shape == frame.shape
            if i == 0:
                assert np.array_equal(got, out)                             # a new size: nothing blended in
                continue
            # OpenCV's DIS object keeps buffers from call to call at some sizes (26x40 here: its flow differs
            # by 0.06 px from a fresh one's), so the filter with a history matches the fresh one to rounding
            assert np.abs(got - want).mean() < 0.5, (frame.shape, i, np.abs(got - want).mean())
            assert np.abs(got - out).mean() > 4.0                           # and the filter does act there
