import time

import pytest


def test_stage_times_wait_for_the_device_before_reading():
    """fps.py on a GPU sets StageTimes.sync: every reading first runs it (here a recorder)."""
    from realtime.stylizer import StageTimes
    calls = []
    st = StageTimes(sync=lambda: calls.append(1))
    t = st.add("a", 0.0)
    st.add("b", t)
    assert len(calls) == 2 and set(st.ms) == {"a", "b"}


def test_stage_times_are_the_milliseconds_since_the_stages_start():
    """add(name, t0) records the milliseconds from t0 to now and returns now, the next stage's start: a
    stage begun half a second ago reads at least 500 ms, and the time handed back is the one it measured to."""
    from realtime.stylizer import StageTimes
    st = StageTimes()
    t0 = time.perf_counter() - 0.5
    before = time.perf_counter()
    t = st.add("c", t0)
    after = time.perf_counter()
    assert before <= t <= after
    assert st.ms["c"] == (t - t0) * 1000.0 and st.ms["c"] >= 500.0
    t2 = st.add("d", t)
    assert t2 >= t and st.ms["d"] == (t2 - t) * 1000.0 and set(st.ms) == {"c", "d"}


def test_the_mode_hotkey_keeps_iterations_with_the_mode_they_were_given_for():
    """`m` cycles the modes; an --iterations given for the starting mode stays with it: gram's 20 descent
    steps had become 20 of linear's iterations (instead of its exact form), and a linear --iterations 500
    became 500 gram steps a frame."""
    import types
    from realtime.pipeline import Pipeline
    from realtime.stylizer import StylizerConfig
    st = types.SimpleNamespace(config=StylizerConfig(mode="gram", iterations=20), reset=lambda: None)
    pipe = Pipeline(None, None, st, progress=False)
    seen = {}
    for _ in range(4):
        pipe.handle_key(ord("m"), None)
        seen[st.config.mode] = st.config.iterations
    assert st.config.mode == "gram" and seen == {"linear": None, "adain": None, "wct": None, "gram": 20}


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["adain", "linear", "wct"])
def test_cuda_stylizer_in_fp16_gives_the_cpu_stylizers_frames(mode):
    """End to end on CUDA -- FP16 engines (channels_last, CUDA graphs: the CUDA defaults), the fused kernel
    (adain, linear) or the kernel's moments (wct), the deflicker on the device -- against the FP32
    stylizer on the CPU, over frames of the demo clip with fixed portrait regions: within a few grey
    levels (FP16 networks; the deflicker's flow runs on each side's own frames)."""
    import numpy as np
    from benchmarks.fps import build, load_frames
    from realtime import kernels
    assert kernels.available(), f"the fused kernel did not build: {kernels._ext_error}"
    frames = load_frames(4)
    gpu, seg_g = build("torch", "cuda", True, "relu3_1", mode, "portrait", (320, 0), deflicker=0.5,
                       fixed_regions=True, decoder="small")
    cpu, seg_c = build("torch", "cpu", False, "relu3_1", mode, "portrait", (320, 0), deflicker=0.5,
                       fixed_regions=True, decoder="small")
    for f in frames:
        a, b = gpu.stylize(f, seg_g(f)), cpu.stylize(f, seg_c(f))
        assert a.shape == b.shape == f.shape
        diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        assert diff.mean() < 2.5 and np.percentile(diff, 99) < 25, (mode, diff.mean(), np.percentile(diff, 99))
