"""Decoder network and training loop: structure, files, checkpoints and an exact resume."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.decoder import Decoder, load_decoder, save_decoder
from engines.weights import WeightsError, build_encoder, weights_dir
from training import train_decoder as T


@pytest.mark.parametrize("layer,ups,convs", [("relu3_1", 2, 5), ("relu4_1", 3, 8)])
def test_decoder_mirrors_the_encoder(layer, ups, convs):
    d = Decoder(layer, width=1.0)
    mods = list(d.net)
    assert sum(isinstance(m, torch.nn.Upsample) and m.mode == "nearest" for m in mods) == ups
    conv = [m for m in mods if isinstance(m, torch.nn.Conv2d)]
    assert len(conv) == convs and all(c.padding_mode == "zeros" for c in conv)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in mods)
    s = 4 if layer == "relu3_1" else 8
    y = d(torch.rand(1, d.in_channels, 5, 7), out_size=(5 * s - 3, 7 * s - 1))
    assert y.shape == (1, 3, 5 * s - 3, 7 * s - 1)
    with pytest.raises(ValueError, match="expects"):
        d(torch.rand(1, 3, 5, 5))


def test_decoder_file_roundtrip_and_integrity(tmp_path):
    d = Decoder("relu3_1", width=0.25)
    d.feat_scale.fill_(3.0)
    p = tmp_path / "d.pt"
    save_decoder(d, p, encoder_id="enc-a")
    e = load_decoder(p, encoder_id="enc-a")
    x = torch.rand(1, 256, 6, 6)
    torch.testing.assert_close(e(x), d(x), rtol=2e-2, atol=2e-2)     # FP16 storage
    with pytest.raises(WeightsError, match="trained for encoder"):
        load_decoder(p, encoder_id="enc-b")
    obj = torch.load(p, weights_only=True)
    k = next(iter(obj["state_dict"]))
    obj["state_dict"][k] = obj["state_dict"][k] + 1
    torch.save(obj, p)
    with pytest.raises(WeightsError, match="corrupt or was modified"):
        load_decoder(p)
    with pytest.raises(FileNotFoundError):
        load_decoder(tmp_path / "none.pt")


@pytest.mark.parametrize("layer", ["relu3_1", "relu4_1"])
def test_shipped_decoders_load_and_are_small(layer, hed_weights):
    p = weights_dir() / f"decoder_{layer}.pt"
    assert p.stat().st_size <= 10 * 1024 * 1024
    d = load_decoder(p, encoder_id=hed_weights.encoder_id)
    assert d.layer == layer and d.meta.get("iterations", 0) > 0


@pytest.fixture
def tiny_data(tmp_path, portrait_bgr):
    ph, pa = tmp_path / "photos", tmp_path / "paintings"
    ph.mkdir()
    pa.mkdir()
    for i in range(5):
        cv2.imwrite(str(ph / f"p{i}.jpg"), cv2.resize(np.roll(portrait_bgr, 40 * i, 1), (64, 72)))
    for i in range(3):
        img = cv2.applyColorMap(cv2.resize(portrait_bgr, (60, 64))[..., 0], i * 3)
        cv2.imwrite(str(pa / f"s{i}.png"), img)
    (ph / "broken.jpg").write_bytes(b"nope")
    return ph, pa


def _cfg(tmp_path, ph, pa, **kw):
    base = dict(layer="relu3_1", photos=str(ph), paintings=str(pa), iterations=4, batch=2, crop=32, load_side=48,
                width=0.25, mix_prob=0.5, threads=1, grid_every=2, eval_every=100, checkpoint_minutes=100)
    base.update(kw)
    return T.TrainConfig(**base)


def test_training_runs_skips_bad_files_and_resumes_exactly(tiny_data, tmp_path, caplog):
    ph, pa = tiny_data
    a = _cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"))
    with caplog.at_level("WARNING"):
        T.train(a)
    assert "skipping unreadable image" in caplog.text and "skipped 1 unreadable" in caplog.text
    assert (tmp_path / "ra" / "samples_0000002.png").exists()
    # the same schedule, interrupted after 2 iterations and resumed, gives the same weights
    b = _cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), stop_after=2)
    T.train(b)
    assert torch.load(tmp_path / "rb" / "checkpoint.pt", weights_only=False)["iteration"] == 2
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb")), resume=True)
    da, db = load_decoder(tmp_path / "a.pt"), load_decoder(tmp_path / "b.pt")
    assert da.meta["iterations"] == db.meta["iterations"] == 4
    for (k, va), vb in zip(da.state_dict().items(), db.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    fresh = Decoder("relu3_1", width=0.25)
    assert any((v - fresh.state_dict()[k]).abs().max() > 0 for k, v in da.state_dict().items() if "weight" in k)


def test_lowres_loss_sees_regional_tone_not_fine_detail():
    """lowres_loss (--lowres-weight): zero for a zero-mean pattern inside each 4 x 4 block (fine detail),
    the full squared offset for a patch of wrong brightness that covers whole blocks."""
    target = torch.rand(2, 3, 16, 20)
    checker = (torch.arange(16)[:, None] + torch.arange(20)[None, :]) % 2 * 2.0 - 1.0     # +-1, zero mean per block
    detail = target + 0.1 * checker
    patch = target.clone()
    patch[..., 4:12, 8:16] += 0.1
    assert float(T.lowres_loss(detail, target)) < 1e-12 < float(torch.nn.functional.mse_loss(detail, target))
    # the patch is 8 x 8 of 16 x 20 pixels: mean squared offset 0.01 * 64 / 320 on both scales
    assert float(T.lowres_loss(patch, target)) == pytest.approx(0.01 * 64 / 320, rel=1e-4)
    assert float(T.lowres_loss(target, target)) == 0.0


def test_lowres_weight_changes_training_and_is_recorded(tiny_data, tmp_path):
    ph, pa = tiny_data
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra")))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), lowres_weight=4.0))
    ck = torch.load(tmp_path / "rb" / "checkpoint.pt", weights_only=False)
    assert ck["config"]["lowres_weight"] == 4.0
    da, db = load_decoder(tmp_path / "a.pt"), load_decoder(tmp_path / "b.pt")
    assert any((va - vb).abs().max() > 0 for va, vb in zip(da.state_dict().values(), db.state_dict().values()))
    cfg, _ = T.parse_args(["--lowres-weight", "2.5"])
    assert cfg.lowres_weight == 2.5 and T.parse_args([])[0].lowres_weight == 0.0


def test_training_revives_dead_channels_and_resumes_exactly(tiny_data, tmp_path):
    """--revive-every: a checkpoint with dead channels (a huge negative bias) continues with them revived
    (fresh bias, active again), and the run interrupted and resumed gives the same weights."""
    import random
    ph, pa = tiny_data
    torch.manual_seed(3)
    dead = Decoder("relu3_1", width=0.25)
    convs = [m for m in dead.net if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        convs[0].bias[[2, 9]] = -1e4
        convs[1].bias[4] = -1e4
    ck = {"config": {"layer": "relu3_1", "width": 0.25}, "model": dead.state_dict(), "iteration": 0, "history": [],
          "py_rng": random.Random(0).getstate(), "torch_rng": torch.get_rng_state()}
    for r in ("ra", "rb"):
        (tmp_path / r).mkdir()
        torch.save(ck, tmp_path / r / "checkpoint.pt")
    kw = dict(revive_every=2, iterations=4)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), **kw), resume=True)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), stop_after=3, **kw),
            resume=True)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), **kw), resume=True)
    ma = torch.load(tmp_path / "ra" / "checkpoint.pt", weights_only=False)["model"]
    mb = torch.load(tmp_path / "rb" / "checkpoint.pt", weights_only=False)["model"]
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], msg=k)
    b0, b1 = ma["net.0.bias"], [v for k, v in ma.items() if k.endswith(".bias")][1]
    assert float(b0[[2, 9]].max()) > -100 and float(b1[4]) > -100       # revived: no longer pinned dead
    again = Decoder("relu3_1", width=0.25)
    again.load_state_dict(ma)
    from training.revive import channel_scores
    enc = build_encoder("relu3_1")
    img = torch.from_numpy(cv2.imread(str(next(ph.glob("p0.jpg"))))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sc = channel_scores(again, [enc(img)])
    assert float(sc[0][[2, 9]].min()) > 0 and float(sc[1][4]) > 0


def test_weight_average_update_is_each_parameters_lerp():
    """ema_update (one multi-tensor lerp) gives, bit for bit, each parameter's own lerp_ towards the
    trained weights, and leaves the trained decoder alone."""
    torch.manual_seed(1)
    dec, avg = Decoder("relu3_1", width=0.25), Decoder("relu3_1", width=0.25)
    want = [a.detach().clone().lerp_(p.detach(), 1.0 - 0.99) for a, p in zip(avg.parameters(), dec.parameters())]
    before = [p.detach().clone() for p in dec.parameters()]
    T.ema_update(avg, dec, 0.99)
    for a, w in zip(avg.parameters(), want):
        assert torch.equal(a.detach(), w)
    assert all(torch.equal(p.detach(), b) for p, b in zip(dec.parameters(), before))
    assert not all(torch.equal(a.detach(), p.detach()) for a, p in zip(avg.parameters(), dec.parameters()))


def test_amp_training_runs_its_forward_passes_in_bfloat16_and_learns(tiny_data, tmp_path):
    """--amp: the forward passes under bfloat16 autocast (losses, weights and Adam stay FP32; on a CPU
    as on CUDA): the weights move and stay finite, and they differ from the FP32 run of the same
    schedule, so autocast really ran."""
    ph, pa = tiny_data
    for name, amp in (("f", False), ("m", True)):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / f"{name}.pt"), run_dir=str(tmp_path / f"r{name}"),
                     feat_on_plain=True, amp=amp))
    ck = {n: torch.load(tmp_path / f"r{n}" / "checkpoint.pt", weights_only=False) for n in ("f", "m")}
    assert ck["m"]["config"]["amp"] and not ck["f"]["config"]["amp"]
    fm, mm = ck["f"]["model"], ck["m"]["model"]
    assert all(torch.isfinite(v).all() for v in mm.values())
    assert max(float((fm[k] - mm[k]).abs().max()) for k in fm if "weight" in k) > 0
    torch.manual_seed(0)                                   # the training's own initialisation (seed 0)
    fresh = Decoder("relu3_1", width=0.25).state_dict()
    assert all(float((mm[k] - fresh[k]).abs().max()) > 0 for k in mm if "weight" in k)
    assert (tmp_path / "rm" / "samples_0000002.png").exists()
    assert T.parse_args(["--amp"])[0].amp and not T.parse_args([])[0].amp


def test_lr_schedule_and_cli_errors(tmp_path, capsys):
    cfg = T.TrainConfig(iterations=100, lr=1e-3, lr_final=1e-5)
    assert T.lr_at(cfg, 0) == T.lr_at(cfg, 49) == 1e-3
    assert T.lr_at(cfg, 100) == pytest.approx(1e-5)
    assert T.lr_at(cfg, 75) < 1e-3
    # by time: the iteration count no longer matters, this run's elapsed seconds do
    tcfg = T.TrainConfig(iterations=10**6, lr=1e-3, lr_final=1e-5, max_minutes=10, lr_by_time=True)
    assert T.lr_at(tcfg, 5, elapsed=299) == 1e-3
    assert T.lr_at(tcfg, 5, elapsed=600) == pytest.approx(1e-5)
    assert 1e-5 < T.lr_at(tcfg, 5, elapsed=450) < 1e-3
    # warm-up: this run's first iterations ramp up, whatever the schedule's position
    wcfg = T.TrainConfig(iterations=100, lr=1e-3, lr_final=1e-5, warmup=10)
    assert T.lr_at(wcfg, 60, run_it=0) == pytest.approx(0.1 * T.lr_at(wcfg, 60))
    assert T.lr_at(wcfg, 60, run_it=4) == pytest.approx(0.5 * T.lr_at(wcfg, 60))
    assert T.lr_at(wcfg, 60, run_it=9) == T.lr_at(wcfg, 60) == T.lr_at(wcfg, 60, run_it=500)
    assert T.parse_args(["--warmup", "500"])[0].warmup == 500
    assert T.parse_args(["--lr-by-time", "--max-minutes", "3"])[0].lr_by_time
    assert T.main(["--photos", str(tmp_path / "none"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


def test_feature_cache_matches_the_encoder_is_reused_and_resumes_exactly(tiny_data, tmp_path, caplog, hed_weights):
    ph, pa = tiny_data
    kw = dict(cache_crops=6, mix_crop=16, mix_prob=0.5)
    a = _cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), **kw)
    T.train(a)
    feat_files = list((tmp_path / "ra").glob("feature_cache_*.feat.npy"))
    assert len(feat_files) == 1 and not list((tmp_path / "ra").glob("*.tmp*"))
    imgs = np.load(str(feat_files[0]).replace(".feat.npy", ".img.npy"))
    feats = np.load(feat_files[0])
    assert imgs.shape == (6, 32, 32, 3) and feats.dtype == np.float16
    enc = build_encoder("relu3_1", hed_weights)
    with torch.no_grad():
        ref = enc(T.to_tensor(list(imgs)))
    torch.testing.assert_close(torch.from_numpy(feats).float(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))
    # an interrupted and resumed run reuses the cache and ends with the same weights
    b = _cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), stop_after=2, **kw)
    T.train(b)
    with caplog.at_level("INFO", logger="training"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), **kw), resume=True)
    assert "using the feature cache" in caplog.text
    da, db = load_decoder(tmp_path / "a.pt"), load_decoder(tmp_path / "b.pt")
    for (k, va), vb in zip(da.state_dict().items(), db.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    # another crop size is another cache: it is rebuilt, not reused
    caplog.clear()
    with caplog.at_level("INFO", logger="training"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rb"), crop=24,
                     iterations=1, **kw))
    assert "rebuilding" in caplog.text
    assert np.load(str(feat_files[0]).replace("ra", "rb").replace(".feat.npy", ".img.npy")).shape[1] == 24
    # a damaged key (a write cut short) means "rebuild", never a crash or a wrong cache
    key = next((tmp_path / "ra").glob("feature_cache_*.json"))
    key.write_text('{"layer": "relu3')
    caplog.clear()
    with caplog.at_level("INFO", logger="training"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(tmp_path / "ra"), iterations=1, **kw))
    assert "rebuilding" in caplog.text and json.loads(key.read_text())["crop"] == 32


def test_max_minutes_stops_with_a_checkpoint_and_no_cuda_is_a_clear_error(tiny_data, tmp_path, capsys):
    ph, pa = tiny_data
    cfg = _cfg(tmp_path, ph, pa, out=str(tmp_path / "m.pt"), run_dir=str(tmp_path / "rm"), iterations=1000,
               max_minutes=1e-9)
    T.train(cfg)
    ck = torch.load(tmp_path / "rm" / "checkpoint.pt", weights_only=False)
    assert ck["iteration"] < 1000 and (tmp_path / "m.pt").exists()
    if not torch.cuda.is_available():
        assert T.main(["--photos", str(ph), "--paintings", str(pa), "--device", "cuda",
                       "--run-dir", str(tmp_path / "rc")]) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("amp,fast", [(False, False), (True, False), (False, True)])
def test_training_on_cuda_with_cache_matches_shapes_and_learns(tiny_data, tmp_path, amp, fast):
    """On CUDA, FP32 and --amp, and with --channels-last --cudnn-benchmark (fast): finite weights that moved."""
    ph, pa = tiny_data
    cfg = _cfg(tmp_path, ph, pa, out=str(tmp_path / "g.pt"), run_dir=str(tmp_path / "rg"), device="cuda",
               cache_crops=6, mix_crop=16, iterations=6, amp=amp, feat_on_plain=amp, channels_last=fast,
               cudnn_benchmark=fast)
    T.train(cfg)
    d = load_decoder(tmp_path / "g.pt")
    assert d.meta["iterations"] == 6 and d.meta["config"]["device"] == "cuda" and d.meta["config"]["amp"] is amp
    assert d.meta["config"]["channels_last"] is fast
    assert all(torch.isfinite(v.float()).all() for v in d.state_dict().values())
    torch.manual_seed(0)                                   # the training's own initialisation (seed 0)
    fresh = Decoder("relu3_1", width=0.25).state_dict()
    assert all(float((d.state_dict()[k].float() - fresh[k]).abs().max()) > 0 for k in fresh if "weight" in k)


def test_channels_last_training_is_the_same_maths_and_saves_plain_tensors(tiny_data, tmp_path):
    """--channels-last changes the memory layout only: at a tiny rate (so that Adam's sign-like first steps
    cannot amplify rounding) the weights end where the NCHW run's do, the checkpoint and the decoder file
    hold plain contiguous tensors, and an NCHW run resumes the channels_last checkpoint."""
    ph, pa = tiny_data
    for name, cl in (("n", False), ("c", True)):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / f"{name}.pt"), run_dir=str(tmp_path / f"r{name}"),
                     channels_last=cl, lr=1e-7, lr_final=1e-7, iterations=3))
    ck = {n: torch.load(tmp_path / f"r{n}" / "checkpoint.pt", weights_only=False) for n in ("n", "c")}
    assert ck["c"]["config"]["channels_last"] and not ck["n"]["config"]["channels_last"]
    for part in ("model", "ema"):
        for k, v in ck["c"][part].items():
            assert v.is_contiguous(), (part, k)
            torch.testing.assert_close(v, ck["n"][part][k], atol=1e-6, rtol=0, msg=f"{part} {k}")
    torch.manual_seed(0)
    fresh = Decoder("relu3_1", width=0.25).state_dict()
    assert any(float((ck["c"]["model"][k] - fresh[k]).abs().max()) > 0 for k in fresh if "weight" in k)
    assert all(v.is_contiguous() for v in torch.load(tmp_path / "c.pt", weights_only=False)["state_dict"].values())
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), iterations=5), resume=True)
    assert load_decoder(tmp_path / "c.pt").meta["iterations"] == 5


def test_prefetched_batches_train_exactly_as_in_the_loop_and_resume_exactly(tiny_data, tmp_path):
    """--prefetch N draws the same batches in a thread: the weights (and their average, and the channels
    revived every 2 iterations from their own RNG) end exactly where the in-loop run's do, and a prefetching
    run stopped and resumed ends there too -- its checkpoint keeps the RNG of the last batch used, not of
    the batches drawn ahead."""
    ph, pa = tiny_data
    kw = dict(iterations=6, mix_prob=0.5, revive_every=2, grid_every=1000)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), **kw))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), prefetch=3, **kw))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), prefetch=2,
                 stop_after=3, **kw))
    assert torch.load(tmp_path / "rc" / "checkpoint.pt", weights_only=False)["iteration"] == 3
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), prefetch=2, **kw),
            resume=True)
    ck = {n: torch.load(tmp_path / f"r{n}" / "checkpoint.pt", weights_only=False) for n in "abc"}
    assert ck["a"]["iteration"] == ck["b"]["iteration"] == ck["c"]["iteration"] == 6
    assert ck["a"]["py_rng"] == ck["b"]["py_rng"] == ck["c"]["py_rng"]
    for n in "bc":
        for part in ("model", "ema"):
            for k, v in ck["a"][part].items():
                torch.testing.assert_close(ck[n][part][k], v, atol=0, rtol=0, msg=f"{n} {part} {k}")
    torch.manual_seed(0)
    fresh = Decoder("relu3_1", width=0.25).state_dict()
    assert any(float((ck["b"]["model"][k] - fresh[k]).abs().max()) > 0 for k in fresh if "weight" in k)
    assert T.parse_args(["--prefetch", "2"])[0].prefetch == 2 and T.parse_args([])[0].prefetch == 0


def test_a_failing_prefetch_thread_stops_training_with_its_error_and_a_checkpoint(tiny_data, tmp_path, monkeypatch):
    ph, pa = tiny_data
    real, calls = T.BatchSource.make, {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk went away")
        return real(self)
    monkeypatch.setattr(T.BatchSource, "make", flaky)
    with pytest.raises(RuntimeError, match="drawing a training batch failed.*disk went away"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "f.pt"), run_dir=str(tmp_path / "rf"), prefetch=1,
                     iterations=8, grid_every=1000))
    assert torch.load(tmp_path / "rf" / "checkpoint.pt", weights_only=False)["iteration"] == 3


@pytest.mark.gpu
def test_prefetched_batches_on_cuda_train_like_the_loops(tiny_data, tmp_path):
    """On CUDA the thread draws on a stream of its own: the run ends near the in-loop run's weights (cuDNN's
    backward may sum in another order, hence a tolerance) and its RNG exactly there."""
    ph, pa = tiny_data
    kw = dict(iterations=6, mix_prob=0.5, grid_every=1000, device="cuda", lr=1e-6, lr_final=1e-6)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), **kw))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), prefetch=2, **kw))
    ck = {n: torch.load(tmp_path / f"r{n}" / "checkpoint.pt", weights_only=False) for n in "ab"}
    assert ck["a"]["py_rng"] == ck["b"]["py_rng"]
    for k, v in ck["a"]["model"].items():
        torch.testing.assert_close(ck["b"]["model"][k], v, atol=1e-5, rtol=1e-4, msg=k)


def test_profile_writes_the_phases_of_an_iteration(tiny_data, tmp_path):
    """--profile N: after this run's first 10 iterations, N are profiled and RUN/profile.txt names each phase
    of the step with its host time; a run that ends inside the window still writes what it has.  The decoder's
    meta gains the speed without the first 10 iterations."""
    ph, pa = tiny_data
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "p.pt"), run_dir=str(tmp_path / "rp"), iterations=14,
                 profile=3, grid_every=1000, mix_prob=0.5))
    text = (tmp_path / "rp" / "profile.txt").read_text()
    assert text.startswith("# torch.profiler over 3 training iterations on cpu")
    for ph_name in ("step.batch", "step.data+encode", "step.forward+loss", "step.backward", "step.adam", "step.ema"):
        assert ph_name in text
    import re
    ms = [float(m) for m in re.findall(r"^  step\.\S+ +([\d.]+) ms +calls", text, re.M)]
    assert len(ms) >= 6 and all(m >= 0 for m in ms) and max(ms) > 0
    assert "aten::" in text                                    # the operator table
    meta = load_decoder(tmp_path / "p.pt").meta
    assert meta["seconds_per_iteration_steady"] > 0 and meta["seconds_per_iteration"] > 0
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "q.pt"), run_dir=str(tmp_path / "rq"), iterations=12,
                 profile=5, grid_every=1000))
    assert (tmp_path / "rq" / "profile.txt").read_text().startswith("# torch.profiler over 2 training iterations")
    assert T.parse_args(["--profile", "7", "--channels-last", "--cudnn-benchmark"])[0].profile == 7


def test_profile_of_a_prefetched_run_names_the_threads_batch_work(tiny_data, tmp_path):
    """gpu_session.sh profiles its training run, prefetched since session 22: torch.profiler sees only the
    loop's thread, so the profile's phases are the loop's (step.batch = the wait for the thread) and a line
    of its own gives the thread's host time per batch, timed by the batch source; the run goes on past the
    window.  Without --prefetch that line says the loop made them."""
    import re
    ph, pa = tiny_data
    for pre in (2, 0):
        run = tmp_path / f"r{pre}"
        T.train(_cfg(tmp_path, ph, pa, out=str(run / "p.pt"), run_dir=str(run), iterations=16,
                     profile=3, prefetch=pre, grid_every=1000, mix_prob=0.5))
        text = (run / "profile.txt").read_text()
        assert text.startswith("# torch.profiler over 3 training iterations on cpu")
        for name in ("step.batch", "step.forward+loss", "step.backward", "step.adam"):
            assert name in text, name
        m = re.search(r"^batches made in (the prefetch thread|the loop): (\d+), host ms each .* ([\d.]+) mean, "
                      r"([\d.]+) max$", text, re.M)
        assert m, text[:600]
        assert m.group(1) == ("the prefetch thread" if pre else "the loop")
        # the loop makes one a profiled iteration; the thread, running ahead, as many or one or two fewer
        assert int(m.group(2)) >= (1 if pre else 3) and 0 < float(m.group(3)) <= float(m.group(4))
        assert torch.load(run / "checkpoint.pt", weights_only=False)["iteration"] == 16


def test_pack_data_resizes_skips_unreadable_and_trains(tiny_data, tmp_path):
    from training import pack_data
    ph, pa = tiny_data
    out = tmp_path / "packed"
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(out), "--side", "40",
                           "--with-encoder"]) == 0
    from engines.weights import load_encoder_weights
    assert load_encoder_weights(out / "encoder.pt").encoder_id == load_decoder(
        weights_dir() / "decoder_relu3_1.pt").encoder_id
    photos = sorted((out / "photos").iterdir())
    assert len(photos) == 5 and len(list((out / "paintings").iterdir())) == 3     # broken.jpg skipped
    assert all(min(cv2.imread(str(p)).shape[:2]) == 40 for p in photos)
    assert not list(tmp_path.glob(".packed.*")) and (out / "pack.json").is_file()
    # --no-upscale: the 64 x 72 photos stay as they are under --side 100, larger ones are reduced
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "own"),
                           "--side", "100", "--no-upscale"]) == 0
    assert all(cv2.imread(str(p)).shape[:2] == (72, 64) for p in (tmp_path / "own" / "photos").iterdir())
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "own2"),
                           "--side", "50", "--no-upscale"]) == 0
    assert all(min(cv2.imread(str(p)).shape[:2]) == 50 for p in (tmp_path / "own2" / "photos").iterdir())
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "big"),
                           "--limit-mib", "0.0001"]) == 2 and not (tmp_path / "big").exists()
    # someone's folder is not replaced (it was deleted), nor a file; a failed pack leaves nothing
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert pack_data.main(["--photos", str(ph), "--paintings", str(tmp_path / "none"), "--out",
                           str(tmp_path / "half")]) == 2
    assert not list(tmp_path.glob("*half*"))
    # a folder laid out as a training set (photos/, paintings/) but not a pack is not replaced, nor one
    # holding the images being packed
    orig = tmp_path / "orig"
    (orig / "photos").mkdir(parents=True)
    (orig / "paintings").mkdir()
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(orig)]) == 2
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(ph.parent)]) == 2
    assert (orig / "photos").is_dir() and ph.is_dir()
    # an earlier pack is replaced
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(out), "--side", "36"]) == 0
    assert all(min(cv2.imread(str(p)).shape[:2]) == 36 for p in (out / "photos").iterdir())
    T.train(_cfg(tmp_path, out / "photos", out / "paintings", out=str(tmp_path / "p.pt"), run_dir=str(tmp_path / "rp"),
                 load_side=40, iterations=2))
    assert load_decoder(tmp_path / "p.pt").meta["iterations"] == 2


def test_pack_data_as_webp_is_closer_to_the_originals_than_jpeg_at_the_same_quality_and_trains(tmp_path, portrait_bgr,
                                                                                             capsys):
    """--format webp: .webp files that the trainer reads, nearer the resized originals than JPEG's at the same
    --quality (the reason for it); an unknown format or a quality outside 1..100 is a clear error."""
    from training import pack_data
    from training.data import iter_folder
    ph, pa = tmp_path / "ph", tmp_path / "pa"
    ph.mkdir()
    pa.mkdir()
    for i in range(3):       # textured photos: a smooth one compresses too well to tell the formats apart
        noise = np.random.default_rng(i).integers(0, 60, portrait_bgr.shape, dtype=np.uint8)
        cv2.imwrite(str(ph / f"p{i}.png"), cv2.add(portrait_bgr, noise))
        cv2.imwrite(str(pa / f"s{i}.png"), portrait_bgr[::-1])
    err = {}
    for fmt in ("jpg", "webp"):
        out = tmp_path / fmt
        assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(out), "--side", "96",
                               "--quality", "60", "--format", fmt]) == 0
        files = sorted((out / "photos").iterdir())
        assert len(files) == 3 and all(f.suffix == "." + fmt for f in files)
        orig = {p.stem: img for p, img in iter_folder(ph, 96, set(), "photos", {})}
        err[fmt] = np.mean([np.mean((cv2.imread(str(f)).astype(float) - orig[f.stem]) ** 2) for f in files])
    assert err["webp"] < err["jpg"]
    T.train(_cfg(tmp_path, tmp_path / "webp" / "photos", tmp_path / "webp" / "paintings", out=str(tmp_path / "w.pt"),
                 run_dir=str(tmp_path / "rw"), load_side=48, iterations=2))
    assert load_decoder(tmp_path / "w.pt").meta["iterations"] == 2
    with pytest.raises(SystemExit):
        pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "x"), "--format", "gif"])
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(tmp_path / "y"),
                           "--quality", "0"]) == 2 and not (tmp_path / "y").exists()
    assert "--quality must be in 1..100" in capsys.readouterr().err


def test_pack_keeps_heldout_portraits_for_evaluation(tiny_data, tmp_path, monkeypatch, caplog):
    """Held-out photos are left out of the packed training photos but packed apart, and training
    measures its held-out PSNR from --holdout-dir (without one it says it cannot)."""
    import math
    from training import pack_data
    ph, pa = tiny_data
    monkeypatch.setattr(pack_data, "holdout_names", lambda: {"p0.jpg"})
    monkeypatch.setattr(T, "holdout_names", lambda: {"p0.jpg"})
    out = tmp_path / "packed"
    assert pack_data.main(["--photos", str(ph), "--paintings", str(pa), "--out", str(out), "--side", "40"]) == 0
    assert len(list((out / "photos").iterdir())) == 4
    assert (out / "holdout" / "p0.jpg").read_bytes() == (ph / "p0.jpg").read_bytes()
    cfg = _cfg(tmp_path, out / "photos", out / "paintings", out=str(tmp_path / "h.pt"), run_dir=str(tmp_path / "rh"),
               load_side=40, iterations=2, eval_every=1, holdout_dir=str(out / "holdout"))
    T.train(cfg)
    psnrs = [json.loads(line)["psnr"] for line in (tmp_path / "rh" / "log.jsonl").read_text().splitlines()]
    assert len(psnrs) == 2 and all(math.isfinite(p) and p > 5 for p in psnrs)
    with caplog.at_level("WARNING"):
        T.train(_cfg(tmp_path, out / "photos", out / "paintings", out=str(tmp_path / "n.pt"),
                     run_dir=str(tmp_path / "rn"), load_side=40, iterations=1))
    assert "no held-out portraits in" in caplog.text


def _cli(ph, pa, run, *more):
    return ["--photos", str(ph), "--paintings", str(pa), "--run-dir", str(run), "--crop", "32", "--batch", "2",
            "--load-side", "48", "--width", "0.25", "--threads", "1", "--extra-convs", "0", *map(str, more)]


def test_cli_never_overwrites_a_shipped_decoder_and_checks_outputs_first(tiny_data, tmp_path, capsys):
    """The decoder is written at every checkpoint: its default is the run's folder, a shipped decoder is
    refused (the model card's retrain command used to replace weights/decoder_relu3_1.pt with a half-
    trained one), and a folder as --out fails before anything loads, leaving no run folder."""
    from engines.decoder import shipped_decoder_files
    ph, pa = tiny_data
    shipped = shipped_decoder_files()[0]
    before = shipped.read_bytes()
    assert T.main(_cli(ph, pa, tmp_path / "r1", "--iterations", 2, "--out", shipped)) == 2
    assert "is a shipped decoder" in capsys.readouterr().err and shipped.read_bytes() == before
    (tmp_path / "d").mkdir()
    assert T.main(_cli(ph, pa, tmp_path / "r2", "--iterations", 2, "--out", tmp_path / "d")) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    assert T.main(_cli(ph, pa, tmp_path / "r3", "--iterations", 2, "--eval-every", 0, "--grid-every", 0)) == 0
    assert load_decoder(tmp_path / "r3" / "decoder_relu3_1.pt").meta["iterations"] == 2     # the default --out
    assert not list((tmp_path / "r3").glob("samples_*.png"))                                # --grid-every 0: none


def test_cli_resume_continues_the_runs_recipe_and_refuses_what_it_cannot_continue(tiny_data, tmp_path, capsys,
                                                                                  caplog):
    """--resume takes the run's recipe from its checkpoint (options given now override it); no checkpoint,
    an unreadable one or a finished schedule are one-line errors; a fresh run never starts over a run."""
    ph, pa = tiny_data
    run = tmp_path / "run"
    assert T.main(_cli(ph, pa, run, "--iterations", 3, "--lr", "3e-4", "--holdout-dir", ph)) == 0
    # a fresh start in the same folder would replace its checkpoint: refused
    assert T.main(_cli(ph, pa, run, "--iterations", 3)) == 2
    assert "holds a run already" in capsys.readouterr().err
    # the schedule is done: nothing to train, nothing rewritten
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(SystemExit):
        T.main(["--resume", "--run-dir", str(run)])
    assert "the end of its schedule" in capsys.readouterr().err and (run / "checkpoint.pt").stat().st_mtime_ns == stamp
    # only the schedule's length given: crop, batch, width, rate... come from the checkpoint
    cfg, resume = T.parse_args(["--resume", "--run-dir", str(run), "--iterations", "5"])
    assert resume and (cfg.crop, cfg.batch, cfg.width, cfg.lr, cfg.extra_convs, cfg.iterations) == (32, 2, 0.25, 3e-4, 0, 5)
    assert cfg.holdout_dir == str(ph)                # the run's data, held-out folder included
    assert T.parse_args(["--resume", "--run-dir", str(run), "--iterations", "5", "--lr", "1e-4"])[0].lr == 1e-4
    with caplog.at_level("INFO", logger="training"):
        assert T.main(["--resume", "--run-dir", str(run), "--iterations", "5", "--threads", "1"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=False)["iteration"] == 5
    assert "--crop 32" in caplog.text and "--batch 2" in caplog.text
    # a checkpoint from before --ema existed ran without it: resumed so; --cache-crops is this machine's choice
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    ck["config"].pop("ema")
    ck["config"]["cache_crops"] = 4000
    torch.save(ck, run / "checkpoint.pt")
    cfg = T.parse_args(["--resume", "--run-dir", str(run), "--iterations", "9"])[0]
    assert cfg.ema == 0.0 and cfg.cache_crops == 0
    with pytest.raises(SystemExit):
        T.main(["--resume", "--run-dir", str(tmp_path / "typo")])
    assert "no checkpoint at" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:2000])
    with pytest.raises(SystemExit):
        T.main(["--resume", "--run-dir", str(tmp_path / "bad")])
    assert "cannot be read as a training checkpoint" in capsys.readouterr().err


def test_holdout_dir_of_ones_own_photos_is_evaluated(tiny_data, tmp_path):
    """A user's own held-out folder (none of training/holdout.txt's names) is what training scores."""
    ph, pa = tiny_data
    own = tmp_path / "mine"
    own.mkdir()
    cv2.imwrite(str(own / "me.jpg"), cv2.imread(str(ph / "p1.jpg")))
    assert T.main(_cli(ph, pa, tmp_path / "r", "--iterations", 2, "--eval-every", 1, "--holdout-dir", own)) == 0
    psnrs = [json.loads(line)["psnr"] for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert len(psnrs) == 2 and all(p > 5 for p in psnrs)


def test_mixed_training_features_are_clamped_like_the_stylizers():
    """The decoder is trained on what the stylizer feeds it: mixed features clamped at zero (linear
    and wct push some ReLU features negative; unclamped, they decoded as flat grey patches)."""
    import random
    from realtime import reconstruct as R
    g = torch.Generator().manual_seed(3)
    fp = torch.rand(1, 16, 12, 12, generator=g) * 3 + 2          # bright photo features, dim painting:
    fs = torch.rand(1, 16, 12, 12, generator=g) * 0.1            # the modes pull them below zero
    raw = R.reconstruct(fp, None, R.StyleStats.from_features(fs), mode="linear", strength=1.0, use_kernel=False)
    assert float(raw.min()) < 0.0
    rng = random.Random(0)
    mins = [float(T.mix_features(fp, fs, rng).min()) for _ in range(40)]
    assert min(mins) == 0.0


def _mix_pairs(n, device="cpu", C=32, h=9, w=11, hs=8, ws=10):
    g = torch.Generator().manual_seed(11)
    fp = (torch.rand(n, C, h, w, generator=g) * 3).relu()
    fs = (torch.rand(n, C, hs, ws, generator=g) ** 2) * (1 + torch.arange(C).float()[None, :, None, None] / C)
    return fp.to(device), fs.to(device)


def _check_mix_batch_against_reference(device, dtype=torch.float32, wct_on_cpu=False) -> set:
    """mix_batch against mix_features pair by pair, from the same RNG state; returns the modes drawn."""
    import random
    from training import mixing
    fp, fs = _mix_pairs(12, device)
    fp, fs = fp.to(dtype), fs.to(dtype)
    modes = set()
    for seed in range(4):
        a, b, c = random.Random(seed), random.Random(seed), random.Random(seed)
        got = mixing.mix_batch(fp, fs, a, wct_on_cpu=wct_on_cpu)
        ref = torch.cat([mixing.mix_features(fp[i:i + 1], fs[i:i + 1], b, wct_on_cpu=wct_on_cpu)
                         for i in range(fp.shape[0])])
        modes.update(mixing.draw_mix(c)[0] for _ in range(fp.shape[0]))
        assert a.getstate() == b.getstate() == c.getstate()   # the same draws: resumed runs go on alike
        assert got.dtype == fp.dtype and got.shape == fp.shape and got.device == fp.device
        tol = 1e-4 if dtype == torch.float32 else 2e-3
        torch.testing.assert_close(got.float(), ref.float(), atol=tol, rtol=tol)
        assert float(got.min()) >= 0.0
    return modes


def test_batched_mixes_are_the_reference_mixes_pair_by_pair():
    """training/mixing.py: mix_batch (each mode once over the pairs that drew it) gives what
    mix_features -- the live pipeline's reconstruct, one pair at a time -- gives for every pair, from
    the same RNG draws; 12 pairs x 4 seeds draw every mode, with paintings of another size (patchswap)."""
    from training import mixing
    assert _check_mix_batch_against_reference("cpu") == set(mixing.MIX_MODES)
    _check_mix_batch_against_reference("cpu", torch.float16)     # FP16 features: the same, in FP16


def test_batched_mixes_refuse_mismatched_batches():
    from training import mixing
    import random
    fp, fs = _mix_pairs(3)
    with pytest.raises(ValueError, match="same N and C"):
        mixing.mix_batch(fp, fs[:2], random.Random(0))
    with pytest.raises(ValueError, match="same N and C"):
        mixing.mix_batch(fp[0], fs[0], random.Random(0))


@pytest.mark.gpu
def test_batched_mixes_are_the_reference_mixes_on_the_gpu():
    """mix_batch on CUDA features (FP32 and FP16, and with --wct-on-cpu) against mix_features."""
    from training import mixing
    assert _check_mix_batch_against_reference("cuda") == set(mixing.MIX_MODES)
    _check_mix_batch_against_reference("cuda", torch.float16)
    _check_mix_batch_against_reference("cuda", wct_on_cpu=True)


@pytest.mark.gpu
def test_wct_mix_on_the_cpu_is_the_devices_mix_returned_to_the_device():
    """--wct-on-cpu: each mode's mix from the same RNG state, on the device and with wct on the host, agree
    and come back on the device (wct among the modes drawn)."""
    import random
    g = torch.Generator().manual_seed(5)
    fp = (torch.rand(1, 256, 16, 16, generator=g) * 2).cuda()
    fs = (torch.rand(1, 256, 16, 16, generator=g) ** 2).cuda()
    modes = set()
    for seed in range(12):
        a, b = random.Random(seed), random.Random(seed)
        modes.add(random.Random(seed).choice(T.MIX_MODES))
        on_dev, via_cpu = T.mix_features(fp, fs, a), T.mix_features(fp, fs, b, wct_on_cpu=True)
        assert via_cpu.device == fp.device and a.getstate() == b.getstate()
        torch.testing.assert_close(via_cpu, on_dev, atol=2e-4, rtol=2e-4)
    assert "wct" in modes


def _half_decoder_with_biases():
    """A half-width relu3_1 decoder whose biases are not zero (so a reshaping that mishandles them shows)."""
    from engines.decoder import Decoder
    torch.manual_seed(0)
    dec = Decoder("relu3_1", "vgg16", 0.5)
    for m in dec.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    dec.feat_scale.fill_(2.0)
    return dec


def _checkpoint_of(dec, path):
    import random
    ck = {"config": {"layer": "relu3_1", "width": dec.width, "lr": 1e-4}, "model": dec.state_dict(), "optim": {},
          "iteration": 123, "history": [{"it": 100, "psnr": 20.0}], "py_rng": random.Random(1).getstate(),
          "torch_rng": torch.get_rng_state()}
    torch.save(ck, path)
    return ck


@pytest.mark.parametrize("tool", ["widen", "deepen"])
def test_reshaping_that_changes_the_output_is_refused_and_writes_nothing(tmp_path, monkeypatch, tool):
    """training.widen/deepen check the reshaped decoder against the original before writing: a reshaping
    that moved the output (here one weight nudged) ends the command and leaves no checkpoint behind."""
    import importlib
    mod = importlib.import_module(f"training.{tool}")
    fn = {"widen": "widen_decoder", "deepen": "deepen_decoder"}[tool]
    real = getattr(mod, fn)

    def broken(*args, **kw):
        out = real(*args, **kw)
        with torch.no_grad():
            out.net[-1].bias.add_(0.05)          # the last convolution: every output pixel moves
        return out

    monkeypatch.setattr(mod, fn, broken)
    _checkpoint_of(_half_decoder_with_biases(), tmp_path / "in.pt")
    with pytest.raises(SystemExit, match={"widen": "widening", "deepen": "deepening"}[tool] + " changed the output by"):
        mod.main(["--from", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out" / "checkpoint.pt")])
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
    monkeypatch.setattr(mod, fn, real)                  # unbroken, the same command writes it
    assert mod.main(["--from", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out" / "checkpoint.pt")]) == 0
    assert (tmp_path / "out" / "checkpoint.pt").exists()


def test_widened_decoder_computes_the_same_and_resumes(tmp_path):
    """training.widen: a half-width decoder made twice as wide (Net2WiderNet) gives the same output,
    its copies are not identical (symmetry broken without changing the output), and the checkpoint
    it writes has the shape train_decoder --resume --width 1.0 loads."""
    from engines.decoder import Decoder
    from training import widen
    narrow = _half_decoder_with_biases()
    wide = widen.widen_decoder(narrow, 2, noise=0.05)
    assert wide.width == 1.0
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in narrow.parameters())
    x = torch.rand(2, 256, 6, 7) * 6
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), rtol=1e-4, atol=1e-5)
    second = [m for m in wide.net if isinstance(m, torch.nn.Conv2d)][1]    # its inputs are copies
    c = second.in_channels // 2
    assert not torch.equal(second.weight[:, :c], second.weight[:, c:])
    ck = _checkpoint_of(narrow, tmp_path / "narrow.pt")
    assert widen.main(["--from", str(tmp_path / "narrow.pt"), "--out", str(tmp_path / "wide" / "checkpoint.pt")]) == 0
    out = torch.load(tmp_path / "wide" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert out["config"]["width"] == 1.0 and out["iteration"] == 123 and out["history"] == ck["history"]
    again = Decoder("relu3_1", "vgg16", 1.0)
    again.load_state_dict(out["model"])
    assert "optim" not in out          # a fresh Adam on resume (train_decoder warns; --warmup ramps it)
    with torch.no_grad():
        torch.testing.assert_close(again(x), narrow(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(SystemExit):
        widen.main(["--from", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])


def test_deepened_decoder_computes_the_same_trains_exports_and_resumes_only_deepened(tiny_data, tmp_path):
    """training.deepen (Net2DeeperNet): identity convolutions added after the first one, before the first
    upsampling (at the features' resolution), leave the output unchanged -- also when deepened twice --
    and train: the checkpoint it writes resumes with --extra-convs N (only with it), and the exported
    decoder keeps its extra convolutions through save and load.  The shipped shape has none."""
    from engines.decoder import Decoder
    from training import deepen
    dec = _half_decoder_with_biases()
    deep = deepen.deepen_decoder(dec, 2)
    twice = deepen.deepen_decoder(deepen.deepen_decoder(dec, 1), 1)
    assert deep.extra == 2 and twice.extra == 2 and deep.config()["extra"] == 2
    first_up = next(i for i, m in enumerate(deep.net) if isinstance(m, torch.nn.Upsample))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deep.net[:first_up]) == 3
    assert sum(p.numel() for p in deep.parameters()) == sum(p.numel() for p in dec.parameters()) + 2 * (64 * 64 * 9 + 64)
    x = torch.rand(2, 256, 6, 7) * 6
    with torch.no_grad():
        torch.testing.assert_close(deep(x), dec(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(twice(x), dec(x), rtol=0, atol=1e-6)
    assert "extra" not in Decoder("relu3_1", width=0.25).config()        # shipped files' configs unchanged
    with pytest.raises(ValueError, match="whole number"):
        Decoder("relu3_1", width=0.25, extra=-1)
    with pytest.raises(ValueError, match="at least 1"):
        deepen.deepen_decoder(dec, 0)

    ph, pa = tiny_data
    run = tmp_path / "rd"
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run)))
    plain = load_decoder(tmp_path / "d.pt")
    assert deepen.main(["--from", str(run / "checkpoint.pt"), "--out", str(run / "checkpoint.pt")]) == 0
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["extra_convs"] == 2 and ck["iteration"] == 4 and "optim" not in ck and "ema" not in ck
    again = T.decoder_from_checkpoint(ck, "vgg16")
    f = torch.rand(1, 256, 5, 6) * plain.feat_scale * 3
    with torch.no_grad():         # the exported file held the average; the deepened checkpoint starts from it
        torch.testing.assert_close(again(f), plain(f), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="extra-convs 2"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run), iterations=6), resume=True)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run), iterations=6, extra_convs=2),
            resume=True)
    trained = load_decoder(tmp_path / "d.pt")
    assert trained.extra == 2 and trained.meta["iterations"] == 6
    new = [m for m in trained.net if isinstance(m, torch.nn.Conv2d)][1]
    ident = torch.zeros_like(new.weight)
    ident[torch.arange(new.out_channels), torch.arange(new.out_channels), 1, 1] = 1
    assert not torch.allclose(new.weight, ident)          # training moved the added convolution
    with pytest.raises(SystemExit):
        deepen.main(["--from", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])


def test_dilated_deepening_computes_the_same_sees_further_resumes_only_dilated_and_exports(tiny_data, tmp_path):
    """training.deepen --dilation: the added convolutions are dilated (padding = dilation, same size out),
    start as identities (output unchanged), see further than undilated ones once trained, and the
    dilations travel through the checkpoint (resume only with --extra-dilations), the decoder file and
    the ONNX graph (ONNX Runtime computes the same)."""
    from engines import base
    from engines.decoder import Decoder, save_decoder
    from export.onnx_export import TOLERANCE, compare_outputs, export_onnx
    from training import deepen
    dec = _half_decoder_with_biases()
    deep = deepen.deepen_decoder(deepen.deepen_decoder(dec, 2), 2, dilation=4)
    assert deep.dilations == (1, 1, 4, 4) and deep.config()["dilations"] == [1, 1, 4, 4]
    convs = [m for m in deep.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation for c in convs[1:5]] == [(1, 1), (1, 1), (4, 4), (4, 4)]
    assert [c.padding for c in convs[3:5]] == [(4, 4), (4, 4)]
    x = torch.rand(1, 256, 11, 13) * 6
    with torch.no_grad():
        torch.testing.assert_close(deep(x), dec(x), rtol=0, atol=1e-6)
    assert "dilations" not in deepen.deepen_decoder(dec, 2).config()          # all 1: no key, as shipped
    from training import widen
    wide = widen.widen_decoder(deep, 2, noise=0.05)          # widening keeps the dilations
    assert wide.dilations == (1, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), dec(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="dilations must be 2"):
        Decoder("relu3_1", width=0.5, extra=2, dilations=[1])
    with pytest.raises(ValueError, match="dilation must be at least 1"):
        deepen.deepen_decoder(dec, 1, dilation=0)

    # how far one feature cell's change reaches in the output: with the new convolutions' weights moved
    # off the identity, dilation 4 reaches 8 feature cells (32 px) further than dilation 1 does
    def reach(d):
        m = deepen.deepen_decoder(dec, 2, dilation=d)
        with torch.no_grad():
            for c in [c for c in m.net if isinstance(c, torch.nn.Conv2d)][1:3]:
                c.weight.add_(torch.rand_like(c.weight) * 0.01)
            base_x = torch.rand(1, 256, 31, 31) * 6
            bumped = base_x.clone()
            bumped[..., 15, 15] += 5.0
            cols = ((m(bumped) - m(base_x)).abs().amax(dim=(0, 1, 2)) > 0).nonzero().flatten()
        return int(cols.max() - cols.min() + 1)
    assert reach(4) - reach(1) == 2 * 2 * (4 - 1) * 4

    ph, pa = tiny_data
    run = tmp_path / "rd"
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run)))
    assert deepen.main(["--from", str(run / "checkpoint.pt"), "--out", str(run / "checkpoint.pt"),
                        "--add", "2", "--dilation", "2"]) == 0
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["extra_convs"] == 2 and ck["config"]["extra_dilations"] == "2,2"
    assert "dilation 2" in ck["deepened_from"]
    with pytest.raises(ValueError, match="--extra-dilations 2,2"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run), iterations=6, extra_convs=2),
                resume=True)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "d.pt"), run_dir=str(run), iterations=6, extra_convs=2,
                 extra_dilations="2,2"), resume=True)
    trained = load_decoder(tmp_path / "d.pt")
    assert trained.dilations == (2, 2) and trained.meta["iterations"] == 6
    save_decoder(trained, tmp_path / "again.pt", encoder_id="test")
    again = load_decoder(tmp_path / "again.pt")
    f = torch.rand(1, 256, 7, 9) * trained.feat_scale * 3
    with torch.no_grad():
        torch.testing.assert_close(again(f), trained(f))
    onnx_path = export_onnx(trained.eval(), tmp_path / "d.onnx", what="decoder", layer="relu3_1")
    rows = compare_outputs(trained, base.load_engine(onnx_path), [f, torch.rand(1, 256, 13, 6) * trained.feat_scale])
    assert max(r["rel"] for r in rows) <= TOLERANCE["fp32"]


def test_train_cli_checks_extra_dilations(capsys):
    cfg, _ = T.parse_args(["--extra-convs", "2", "--extra-dilations", "1,2"])
    assert cfg.extra_dilations == "1,2"
    cfg, _ = T.parse_args(["--extra-convs", "2", "--extra-dilations", "1,1"])
    assert cfg.extra_dilations == ""                  # all 1 is the plain shape: recorded as such
    for bad in (["--extra-convs", "2", "--extra-dilations", "2"], ["--extra-convs", "1", "--extra-dilations", "0"],
                ["--extra-convs", "1", "--extra-dilations", "x"], ["--extra-convs", "-1"]):
        with pytest.raises(SystemExit):
            T.parse_args(bad)
        assert "--extra-" in capsys.readouterr().err
    # the one rule for how a config records dilations, and its inverse (training.deepen writes through it)
    for dils in [(1, 1, 4, 4), (2,), (1, 1), ()]:
        spec = T.dilations_spec(dils)
        assert spec == ("" if all(d == 1 for d in dils) else ",".join(map(str, dils)))
        assert T.extra_dilations({"extra_convs": len(dils), "extra_dilations": spec}) == tuple(dils)


def test_revive_finds_dead_channels_and_gives_them_weights_without_changing_the_output(tiny_data, tmp_path):
    """training.revive (ReDo): channels that are zero on every input score 0 and get fresh incoming weights
    and zero outgoing ones: the output stays the same, they are active again and training reaches them
    (their outgoing weights get a gradient); live channels are left alone.  The CLI writes a checkpoint
    train_decoder --resume loads, and refuses a missing one."""
    import random
    from training import revive
    torch.manual_seed(0)
    dec = Decoder("relu3_1", "vgg16", 0.25)
    convs = [m for m in dec.net if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for c in convs:
            c.bias.fill_(0.5)                      # no channel dead by chance
        convs[0].bias[[1, 5, 6]] = -1e4            # dead on any input of sane size
        convs[2].bias[3] = -1e4
    feats = [torch.rand(2, 256, 9, 11) * 3 for _ in range(3)]
    scores = revive.channel_scores(dec, feats)
    assert [len(s) for s in scores] == [c.out_channels for c in convs[:-1]]
    assert scores[0][[1, 5, 6]].abs().max() == 0 and scores[2][3] == 0
    live0 = [i for i in range(convs[0].out_channels) if i not in (1, 5, 6)]
    assert float(scores[0][live0].min()) > 1e-3
    assert float(scores[0].mean()) == pytest.approx(1.0, rel=1e-5)
    w_live = convs[0].weight[live0].detach().clone()
    with torch.no_grad():
        before = [dec(f) for f in feats]
    revived = revive.revive_dormant(dec, scores, feats, tau=1e-3, seed=1)
    assert revived[0] == [1, 5, 6] and revived[2] == [3] and revived[1] == [] and revived[3] == []
    assert torch.equal(convs[0].weight[live0], w_live)
    assert float(convs[0].bias.detach()[[1, 5, 6]].abs().max()) < 1e3 \
        and float(convs[1].weight.detach()[:, [1, 5, 6]].abs().max()) == 0
    with torch.no_grad():
        for f, b in zip(feats, before):
            torch.testing.assert_close(dec(f), b, rtol=0, atol=0)
    again = revive.channel_scores(dec, feats)
    assert float(again[0][[1, 5, 6]].min()) > 0.05 and float(again[2][3]) > 0.05     # centred: active again
    dec.zero_grad()
    dec(feats[0]).square().mean().backward()
    assert float(convs[1].weight.grad[:, [1, 5, 6]].abs().sum()) > 0
    assert float(convs[3].weight.grad[:, 3].abs().sum()) > 0
    # the command line, on a checkpoint with dead channels, measured on a folder of photos
    ph, _pa = tiny_data
    dead = Decoder("relu3_1", "vgg16", 0.25)
    with torch.no_grad():
        [m for m in dead.net if isinstance(m, torch.nn.Conv2d)][0].bias[[0, 2]] = -1e4
    ck = {"config": {"layer": "relu3_1", "width": 0.25, "lr": 1e-4}, "model": dead.state_dict(), "optim": {},
          "iteration": 77, "history": [], "py_rng": random.Random(1).getstate(), "torch_rng": torch.get_rng_state()}
    torch.save(ck, tmp_path / "dead.pt")
    out = tmp_path / "rev" / "checkpoint.pt"
    assert revive.main(["--from", str(tmp_path / "dead.pt"), "--out", str(out), "--photos", str(ph), "--images", "3"]) == 0
    got = torch.load(out, map_location="cpu", weights_only=False)
    assert got["iteration"] == 77 and "optim" not in got and got["revived"]["channels"][0][:2] == [0, 2]
    loaded = Decoder("relu3_1", "vgg16", 0.25)
    loaded.load_state_dict(got["model"])
    assert float([m for m in loaded.net if isinstance(m, torch.nn.Conv2d)][0].bias.detach()[[0, 2]].abs().max()) < 1e3
    with pytest.raises(SystemExit):
        revive.main(["--from", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])


def test_slimmed_checkpoint_is_smaller_and_resumes_with_a_fresh_adam(tiny_data, tmp_path, caplog):
    """training.slim_checkpoint drops the optimizer state (what the committed checkpoints keep, to fit
    the GPU carry limit); train_decoder --resume continues it with a fresh Adam and says so, from the
    same weights and iteration count."""
    from training import slim_checkpoint
    ph, pa = tiny_data
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), stop_after=2, ema=0.0))
    full = tmp_path / "ra" / "checkpoint.pt"
    slim = tmp_path / "rs" / "checkpoint.pt"
    assert slim_checkpoint.main([str(full), "--out", str(slim)]) == 0
    ck, sk = (torch.load(p, map_location="cpu", weights_only=False) for p in (full, slim))
    assert "optim" in ck and "optim" not in sk and sk["iteration"] == ck["iteration"] == 2
    assert slim.stat().st_size < full.stat().st_size
    for k, v in ck["model"].items():
        assert torch.equal(v, sk["model"][k]), k
    with caplog.at_level("WARNING"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "s.pt"), run_dir=str(tmp_path / "rs"), warmup=2), resume=True)
    assert "no optimizer state" in caplog.text
    assert load_decoder(tmp_path / "s.pt").meta["iterations"] == 4
    with pytest.raises(SystemExit):
        slim_checkpoint.main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")])


def test_default_decoder_is_the_small_one_unless_wide_on_cuda(tmp_path, monkeypatch):
    """The CLI's decoder without --decoder: decoder_LAYER.pt everywhere since session 20 (it
    reconstructs better); with WIDE_ON_CUDA, the full-width decoder_LAYER_wide.pt on CUDA where it
    exists, else the small one there too, and always the small one on the CPU (speed)."""
    from engines import decoder as decoder_module
    from engines import weights
    from engines.decoder import default_decoder_path, resolve_decoder
    monkeypatch.setattr(weights, "weights_dir", lambda: tmp_path)
    (tmp_path / "decoder_relu3_1_wide.pt").write_bytes(b"x")
    (tmp_path / "decoder_relu3_1.pt").write_bytes(b"x")
    assert decoder_module.WIDE_ON_CUDA is False
    for device in ("cpu", "cuda", torch.device("cuda", 0)):
        assert default_decoder_path("relu3_1", device) == tmp_path / "decoder_relu3_1.pt"
        assert resolve_decoder(None, "relu3_1", device) == resolve_decoder("auto", "relu3_1", device) \
            == tmp_path / "decoder_relu3_1.pt"
    monkeypatch.setattr(decoder_module, "WIDE_ON_CUDA", True)
    assert default_decoder_path("relu3_1", "cpu") == tmp_path / "decoder_relu3_1.pt"
    assert default_decoder_path("relu3_1", torch.device("cuda", 0)) == tmp_path / "decoder_relu3_1_wide.pt"
    assert default_decoder_path("relu4_1", "cuda") == tmp_path / "decoder_relu4_1.pt"
    assert resolve_decoder(None, "relu3_1", "cpu") == resolve_decoder("auto", "relu3_1", "cpu") == tmp_path / "decoder_relu3_1.pt"
    assert resolve_decoder("auto", "relu3_1", "cuda") == resolve_decoder("wide", "relu3_1", "cpu") == tmp_path / "decoder_relu3_1_wide.pt"
    (tmp_path / "decoder_relu3_1_wide.pt").unlink()
    assert default_decoder_path("relu3_1", "cuda") == tmp_path / "decoder_relu3_1.pt"
    assert resolve_decoder("small", "relu3_1", "cuda") == tmp_path / "decoder_relu3_1.pt"
    assert resolve_decoder("elsewhere/d.pt", "relu3_1") == Path("elsewhere/d.pt")
    with pytest.raises(FileNotFoundError, match="relu3_1 only"):
        resolve_decoder("wide", "relu4_1")


def test_shipped_wide_decoder_loads_and_is_wider():
    """weights/decoder_relu3_1_wide.pt: digest checked at load, full width, stored as CPU tensors
    (it was trained on a GPU: torch.load without map_location must work on a CPU machine)."""
    path = weights_dir() / "decoder_relu3_1_wide.pt"
    small = load_decoder(weights_dir() / "decoder_relu3_1.pt")
    wide = load_decoder(path)
    assert wide.layer == "relu3_1" and wide.width == 1.0 and small.width < wide.width
    raw = torch.load(path, weights_only=True)
    assert all(v.device.type == "cpu" for v in raw["state_dict"].values())


@pytest.mark.gpu
def test_decoder_saved_from_cuda_stores_cpu_tensors(tmp_path):
    dec = Decoder("relu3_1", width=0.25).cuda()
    save_decoder(dec, tmp_path / "d.pt", encoder_id="x")
    raw = torch.load(tmp_path / "d.pt", weights_only=True)       # no map_location: where it was saved
    assert all(v.device.type == "cpu" for v in raw["state_dict"].values())


def test_decoder_normalise_input_is_what_its_first_convolution_sees():
    """Decoder.normalise_input is the forward pass's own input step (benchmarks/dormant.py measures
    the first convolution's pre-activations through it): the first conv's output inside forward,
    caught by a hook, equals that conv applied to normalise_input's result."""
    torch.manual_seed(0)
    dec = Decoder("relu3_1", width=0.5).eval()
    dec.feat_scale.uniform_(0.5, 3.0)                      # not all ones, so a skipped step shows
    seen = []
    first = next(m for m in dec.net if isinstance(m, torch.nn.Conv2d))
    h = first.register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))   # a ReLU follows in place
    f = torch.rand(1, dec.in_channels, 6, 7) * 10
    with torch.no_grad():
        dec(f)
        h.remove()
        torch.testing.assert_close(seen[0], first(dec.normalise_input(f)))
        assert not torch.allclose(seen[0], first(f))


def test_centre_input_trains_a_centred_decoder_that_saves_loads_and_resumes_only_centred(tiny_data, tmp_path):
    """--centre-input: a fresh decoder measures its input's per-channel mean (non-negative ReLU
    features: a positive mean) and spread, subtracts the mean before the scale, and keeps both in FP32
    through save and load; the shipped (uncentred) format has no such buffer, and a checkpoint resumes
    only with the setting it was trained with."""
    ph, pa = tiny_data
    cfg = _cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), centre_input=True)
    T.train(cfg)
    dec = load_decoder(tmp_path / "c.pt")
    assert dec.centre and dec.config()["centre"] is True
    assert dec.feat_mean.dtype == torch.float32 and float(dec.feat_mean.min()) >= 0 and float(dec.feat_mean.max()) > 0
    raw = torch.load(tmp_path / "c.pt", weights_only=True)["state_dict"]
    assert raw["feat_mean"].dtype == torch.float32 and raw["feat_scale"].dtype == torch.float32
    f = torch.rand(1, dec.in_channels, 5, 6) * 3
    torch.testing.assert_close(dec.normalise_input(f), (f - dec.feat_mean) / dec.feat_scale)
    assert "feat_mean" not in Decoder("relu3_1", width=0.25).state_dict()        # shipped format unchanged
    assert "centre" not in Decoder("relu3_1", width=0.25).config()
    with pytest.raises(ValueError, match="centre-input"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), iterations=6),
                resume=True)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "c.pt"), run_dir=str(tmp_path / "rc"), iterations=6,
                 centre_input=True), resume=True)
    assert load_decoder(tmp_path / "c.pt").meta["iterations"] == 6


def test_crop_sampler_smooth_blurs_that_share_of_crops_and_draws_nothing_when_off():
    """CropSampler(smooth=P) (train_decoder --smooth) blurs crops so the decoder sees smooth regions;
    at P=0 it draws no extra random numbers, so runs trained before the option resume alike."""
    import random
    import cv2
    import numpy as np
    from training.data import CropSampler
    rng_img = np.random.default_rng(0)
    imgs = [rng_img.integers(0, 256, (80, 96, 3)).astype(np.uint8) for _ in range(3)]

    def detail(x):
        return float(cv2.Laplacian(x.astype(np.float64), cv2.CV_64F).var())

    plain = CropSampler(imgs, 32, (0.5, 1.0), random.Random(5))
    off = CropSampler(imgs, 32, (0.5, 1.0), random.Random(5), smooth=0.0)
    always = CropSampler(imgs, 32, (0.5, 1.0), random.Random(5), smooth=1.0)
    a, b, c = [plain.sample() for _ in range(8)], [off.sample() for _ in range(8)], [always.sample() for _ in range(8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert plain.rng.getstate() == off.rng.getstate()
    assert all(y.shape == (32, 32, 3) and y.dtype == np.uint8 for y in c)
    assert max(detail(y) for y in c) < 0.2 * min(detail(x) for x in a)
    half = CropSampler(imgs, 32, (1.0, 1.0), random.Random(6), smooth=0.5)  # no resizing: only blur smooths
    blurred = sum(detail(half.sample()) < 0.2 * detail(imgs[0]) for _ in range(200))
    assert 60 < blurred < 140


def test_ema_exports_the_averaged_weights_resumes_exactly_and_slims_to_them(tiny_data, tmp_path):
    """--ema D: the exported decoder holds the moving average of the weights (not the last iterate), the
    average follows min(D, (1+n)/(10+n)), an interrupted and resumed run gives the same average, reviving
    copies the revived channels into it, and slim_checkpoint keeps the average as the model."""
    from training import slim_checkpoint
    ph, pa = tiny_data
    cfg = T.TrainConfig(ema=0.999)
    assert T.ema_decay(cfg, 0) == pytest.approx(0.1) and T.ema_decay(cfg, 90) == pytest.approx(0.91)
    assert T.ema_decay(cfg, 10**6) == 0.999
    assert T.parse_args(["--ema", "0.99"])[0].ema == 0.99 and T.parse_args([])[0].ema == 0.999
    kw = dict(ema=0.5, iterations=6, revive_every=3, lr=1e-2)
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), **kw))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), stop_after=4, **kw))
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "b.pt"), run_dir=str(tmp_path / "rb"), **kw), resume=True)
    ca, cb = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=False) for r in ("ra", "rb"))
    assert ca["ema_updates"] == cb["ema_updates"] == 6
    for k in ca["model"]:
        torch.testing.assert_close(ca["model"][k], cb["model"][k], msg=k)
        torch.testing.assert_close(ca["ema"][k], cb["ema"][k], msg=k)
    exported = load_decoder(tmp_path / "a.pt").state_dict()
    assert exported.keys() == ca["ema"].keys()
    for k, v in exported.items():            # FP16 storage of the average
        torch.testing.assert_close(v.float(), ca["ema"][k].float(), atol=2e-3, rtol=2e-3, msg=k)
    assert max(float((ca["ema"][k] - ca["model"][k]).abs().max()) for k in ca["model"] if "weight" in k) > 1e-3
    assert load_decoder(tmp_path / "a.pt").meta["ema"] == 0.5
    # the average by hand (no reviving): the weights after each step, averaged with the ramped decay from
    # the initial weights (those of a run at rate 0)
    kw = dict(ema=0.5, iterations=6, lr=1e-2)
    steps = []
    for n in range(0, 7):
        r = tmp_path / f"s{n}"
        extra = dict(stop_after=1, lr=0.0, lr_final=0.0) if n == 0 else dict(stop_after=n)
        T.train(_cfg(tmp_path, ph, pa, out=str(r / "d.pt"), run_dir=str(r), **{**kw, **extra}))
        steps.append(torch.load(r / "checkpoint.pt", weights_only=False))
    key = "net.0.weight"
    want = steps[0]["model"][key].clone()
    for n in range(6):
        want.lerp_(steps[n + 1]["model"][key], 1 - min(0.5, (1 + n) / (10 + n)))
    torch.testing.assert_close(want, steps[6]["ema"][key])
    slim = tmp_path / "slim.pt"
    assert slim_checkpoint.main([str(tmp_path / "ra" / "checkpoint.pt"), "--out", str(slim)]) == 0
    sk = torch.load(slim, weights_only=False)
    assert "ema" not in sk and "optim" not in sk
    for k in sk["model"]:
        assert torch.equal(sk["model"][k], ca["ema"][k]), k


def test_copy_revived_puts_exactly_the_revived_channels_into_the_average():
    from training.revive import _convs
    torch.manual_seed(1)
    dec, avg = Decoder("relu3_1", width=0.25), Decoder("relu3_1", width=0.25)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    T.copy_revived(avg, dec, [[1, 5], [], [0]])
    ca, cd = _convs(avg), _convs(dec)
    assert torch.equal(ca[0].weight[[1, 5]], cd[0].weight[[1, 5]]) and torch.equal(ca[0].bias[[1, 5]], cd[0].bias[[1, 5]])
    assert torch.equal(ca[1].weight[:, [1, 5]], cd[1].weight[:, [1, 5]])
    assert torch.equal(ca[2].weight[0], cd[2].weight[0]) and torch.equal(ca[3].weight[:, 0], cd[3].weight[:, 0])
    # everything else is the average's own
    w0 = before["net.0.weight"]
    assert torch.equal(ca[0].weight[0], w0[0]) and not torch.equal(ca[0].weight[0], cd[0].weight[0])
    assert torch.equal(ca[1].weight[:, 0], [v for k, v in before.items() if k.endswith("weight")][1][:, 0])


def test_tools_read_the_average_of_an_ema_checkpoint(tiny_data, tmp_path):
    """revive / widen / dormant.py read a checkpoint through decoder_from_checkpoint: for an --ema run that
    is its averaged weights (what it exported), and revive writes no average (training starts a fresh one)."""
    from training import revive
    ph, pa = tiny_data
    T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), ema=0.9, lr=1e-2))
    ck = torch.load(tmp_path / "ra" / "checkpoint.pt", weights_only=False)
    dec = T.decoder_from_checkpoint(ck, "vgg16")
    for k, v in dec.state_dict().items():
        assert torch.equal(v, ck["ema"][k]), k
    assert not all(torch.equal(ck["ema"][k], ck["model"][k]) for k in ck["model"])
    out = tmp_path / "rv" / "checkpoint.pt"
    assert revive.main(["--from", str(tmp_path / "ra" / "checkpoint.pt"), "--out", str(out), "--photos", str(ph),
                        "--images", "2"]) == 0
    assert "ema" not in torch.load(out, weights_only=False)


def test_first_lr_mult_trains_the_first_convolution_at_that_multiple_of_the_rate(tiny_data, tmp_path):
    """--first-lr-mult M: Adam gets the first convolution as its own group at M x the scheduled rate (the
    others at the rate); the default keeps one group (older checkpoints' optimizer states still load),
    and resuming with another M is refused with a message instead of a crash deep in Adam."""
    dec = Decoder("relu3_1", width=0.25)
    assert len(T.param_groups(dec, 1.0)) == 1
    g = T.param_groups(dec, 0.2)
    first = [m for m in dec.net if isinstance(m, torch.nn.Conv2d)][0]
    assert g[0]["params"] == list(first.parameters()) and g[0]["lr_mult"] == 0.2
    assert len(g[0]["params"]) + len(g[1]["params"]) == len(list(dec.parameters()))
    ph, pa = tiny_data
    cfg = _cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), first_lr_mult=0.2,
               stop_after=2, lr=1e-3, lr_final=1e-3, ema=0.0)
    T.train(cfg)
    ck = torch.load(tmp_path / "ra" / "checkpoint.pt", weights_only=False)
    lrs = [grp["lr"] for grp in ck["optim"]["param_groups"]]
    assert lrs == pytest.approx([2e-4, 1e-3])
    with pytest.raises(ValueError, match="first-lr-mult"):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / "a.pt"), run_dir=str(tmp_path / "ra"), ema=0.0), resume=True)
    assert T.parse_args(["--first-lr-mult", "0.25"])[0].first_lr_mult == 0.25


def test_bad_training_options_are_refused_before_anything_is_made(tmp_path, capsys):
    """Each number option's range, the device's spelling, and the data folders are checked before the run
    folder is made (a failed start used to leave an empty one behind)."""
    for bad, msg in ((["--device", "gpu"], "--device takes cpu, cuda"), (["--batch", "0"], "--batch must be at least 1"),
                     (["--mix-prob", "1.5"], "--mix-prob is a share"), (["--ema", "1"], "--ema is a decay below 1"),
                     (["--lr", "0"], "--lr must be above 0"), (["--scale-min", "2"], "--scale-min 2.0 is above"),
                     (["--lr-final", "-1"], "--lr-final must be at least 0")):
        with pytest.raises(SystemExit):
            T.parse_args(bad)
        assert msg in capsys.readouterr().err, bad
    run = tmp_path / "run"
    assert T.main(["--photos", str(tmp_path / "none"), "--run-dir", str(run)]) == 2
    assert "photos folder" in capsys.readouterr().err and not run.exists()


def test_amp_training_computes_the_fp32_losses_to_bfloat16_precision(tiny_data, tmp_path):
    """--amp is the same training in bfloat16: the first iteration's loss (the same batch, the same
    initial weights: seed 0) within 3 % of the FP32 run's, and the held-out PSNR after it within 0.1 dB
    (a wrong cast or a loss term lost under autocast is far beyond)."""
    import json
    ph, pa = tiny_data
    logs = {}
    for name, amp in (("f", False), ("m", True)):
        T.train(_cfg(tmp_path, ph, pa, out=str(tmp_path / f"{name}.pt"), run_dir=str(tmp_path / f"r{name}"),
                     feat_on_plain=True, amp=amp, iterations=1, eval_every=1, holdout_dir=str(ph),
                     lr=1e-7, lr_final=1e-7, grid_every=0))
        logs[name] = [json.loads(line) for line in (tmp_path / f"r{name}" / "log.jsonl").read_text().splitlines()]
    f, m = logs["f"][0], logs["m"][0]
    assert f["it"] == m["it"] == 1 and f["loss"] > 0
    assert m["loss"] == pytest.approx(f["loss"], rel=0.03)
    assert m["psnr"] == pytest.approx(f["psnr"], abs=0.1)


def test_mixes_are_float32_maths_under_an_autocast():
    """mix_batch computes in float32 whatever autocast its caller runs under: the training drew its
    mixes inside the --amp autocast, where wct's whitening and colouring ran in bfloat16 (a mix's mean
    33 % off)."""
    import random
    from training.mixing import MIX_MODES, mix_batch
    g = torch.Generator().manual_seed(2)
    fp = (torch.randn(6, 32, 8, 8, generator=g) * 20 + 10).relu()
    fs = (torch.randn(6, 32, 8, 8, generator=g) * 30 + 5).relu()
    want = mix_batch(fp, fs, random.Random(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mix_batch(fp, fs, random.Random(5))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    assert "wct" in MIX_MODES
