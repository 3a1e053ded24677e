"""The command line: still images (decoder and gatys), videos and folders, and bad input."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from realtime.cli import DEMO_CLIP, DEMO_STYLE, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo(tmp_path_factory, portrait_bgr):
    p = tmp_path_factory.mktemp("in") / "photo.jpg"
    cv2.imwrite(str(p), cv2.resize(portrait_bgr, (150, 176), interpolation=cv2.INTER_AREA))
    return p


@pytest.fixture(scope="module")
def clip(tmp_path_factory, portrait_bgr):
    p = tmp_path_factory.mktemp("clip") / "clip.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(5):
        w.write(cv2.resize(np.roll(portrait_bgr, 4 * i, axis=1), (128, 96)))
    w.release()
    return p


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-9))


def run_ok(args, capsys):
    rc = main([str(a) for a in args] + ["-q"])
    err = capsys.readouterr().err
    assert rc == 0, err
    return err


def run_bad(args, capsys):
    rc = main([str(a) for a in args] + ["-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err and err[-1].startswith("stylecam: error: ")
    return err[-1]


def test_still_image_through_the_decoder(photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", out], capsys)
    img, src = cv2.imread(str(out)), cv2.imread(str(photo))
    assert img.shape == src.shape
    # strength 0 is the plain autoencoder: close to the input, and closer than the stylised image
    ae = tmp_path / "ae.png"
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", ae, "--strength", "0"], capsys)
    rec = cv2.imread(str(ae))
    assert psnr(rec, src) > 18
    assert psnr(rec, src) > psnr(img, src) + 0.5


def test_decoder_choice_by_name(photo, tmp_path, capsys):
    """--decoder wide / small pick the shipped relu3_1 decoders by name (the small one, the default
    since session 20, reconstructs the photo better at strength 0, as the autoencoder benchmark says:
    27.6 against 25.5 dB); a wide relu4_1 does not ship: one clear error."""
    src = cv2.imread(str(photo))
    got = {}
    for name in ("small", "wide"):
        out = tmp_path / f"{name}.png"
        run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", out, "--strength", "0", "--decoder", name], capsys)
        got[name] = psnr(cv2.imread(str(out)), src)
    assert got["small"] > got["wide"]
    assert "wide relu4_1 decoder" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--layer", "relu4_1",
                                              "--decoder", "wide", "--out", tmp_path / "x.png"], capsys)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("regions", ["none", "person"])
@pytest.mark.parametrize("mode", ["linear", "wct"])
def test_modes_and_regions(photo, tmp_path, capsys, mode, regions, stylizer_configs):
    out = tmp_path / f"{mode}_{regions}.jpg"
    layer = "relu4_1" if mode == "wct" else "relu3_1"
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", out, "--mode", mode, "--regions", regions,
            "--size", "96", "--layer", layer], capsys)
    assert cv2.imread(str(out)).shape[:2] == (176, 150)
    assert [(c.mode, c.layer) for c in stylizer_configs] == [(mode, layer)]         # what the stylizer ran


def test_keep_colors_output_has_the_inputs_colours(photo, tmp_path, capsys, stylizer_configs):
    """--keep-colors reaches the stylizer, and the image it writes has the photo's chroma (CrCb) as seen at
    the processing size, where without it the painting's colours show."""
    from realtime.images import parse_size
    from realtime.stylizer import processing_size
    args = ["--source", photo, "--style", DEMO_STYLE, "--size", "96", "--regions", "none"]
    run_ok(args + ["--out", tmp_path / "plain.png"], capsys)
    run_ok(args + ["--out", tmp_path / "kept.png", "--keep-colors"], capsys)
    assert [c.keep_colors for c in stylizer_configs] == [False, True]
    src = cv2.imread(str(photo))
    h, w = src.shape[:2]
    ph, pw = processing_size(h, w, parse_size("96"), stylizer_configs[0].max_side)
    seen = cv2.resize(cv2.resize(src, (pw, ph), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    ycc = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2YCrCb).astype(int)              # noqa: E731
    plain, kept = cv2.imread(str(tmp_path / "plain.png")), cv2.imread(str(tmp_path / "kept.png"))
    chroma = np.abs(ycc(kept)[..., 1:] - ycc(seen)[..., 1:])
    assert chroma.mean() < 1.0 and np.percentile(chroma, 99) <= 3, (chroma.mean(), np.percentile(chroma, 99))
    assert np.abs(ycc(plain)[..., 1:] - ycc(seen)[..., 1:]).mean() > 3            # the painting's colours
    assert np.abs(ycc(kept)[..., 0] - ycc(plain)[..., 0]).mean() < 1.0            # the stylized luminance


def test_gatys_still_image(photo, tmp_path, capsys):
    out = tmp_path / "g.png"
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", out, "--method", "gatys", "--iterations", "4",
            "--size", "64", "--regions", "none"], capsys)
    g, src = cv2.imread(str(out)), cv2.imread(str(photo))
    assert g.shape == src.shape
    assert np.abs(g.astype(int) - src.astype(int)).mean() > 1.0   # it moved towards the style


@pytest.fixture
def stylizer_configs(monkeypatch):
    """The StylizerConfig of every Stylizer the CLI makes, in order (the Stylizer itself runs as usual)."""
    from realtime import stylizer as S
    seen = []
    real = S.Stylizer.__init__

    def spy(self, config, *a, **k):
        seen.append(config)
        real(self, config, *a, **k)

    monkeypatch.setattr(S.Stylizer, "__init__", spy)
    return seen


def test_deflicker_default_is_on_for_video_and_never_touches_stills(clip, photo, tmp_path, capsys, stylizer_configs):
    """--deflicker: 0.5 by default (DEFAULT_DEFLICKER, every device since session 8), the given value
    when given, off for still images."""
    for extra in ([], ["--deflicker", "0.3"], ["--deflicker", "0"]):
        run_ok(["--source", clip, "--style", DEMO_STYLE, "--out", tmp_path / "o.avi", "--no-window",
                "--regions", "none", "--max-frames", "2", "--device", "cpu"] + extra, capsys)
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "o.png", "--regions", "none",
            "--deflicker", "0.3"], capsys)
    assert [c.deflicker for c in stylizer_configs] == [0.5, 0.3, 0.0, 0.0]


def test_gram_steps_default_to_more_on_stills_than_per_video_frame(clip, photo, tmp_path, capsys, stylizer_configs):
    """gram mode: 30 descent steps on a still (nothing to warm-start from), 10 a frame on video
    (the stylizer's default, warm-started), --iterations overriding both."""
    from realtime.cli import GRAM_STILL_STEPS
    common = ["--style", DEMO_STYLE, "--regions", "none", "--mode", "gram", "--size", "96"]
    run_ok(["--source", photo, "--out", tmp_path / "o.png"] + common, capsys)
    run_ok(["--source", photo, "--out", tmp_path / "o.png", "--iterations", "4"] + common, capsys)
    run_ok(["--source", clip, "--out", tmp_path / "o.avi", "--no-window", "--max-frames", "2"] + common, capsys)
    assert [c.iterations for c in stylizer_configs] == [GRAM_STILL_STEPS, 4, None] and GRAM_STILL_STEPS == 30


def test_video_to_video_keeps_every_frame(clip, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    run_ok(["--source", clip, "--style", DEMO_STYLE, "--out", out, "--no-window"], capsys)
    assert count_frames(out) == 5
    assert not list(tmp_path.glob(".*"))          # no temporary file left behind
    out2 = tmp_path / "frames"
    run_ok(["--source", clip, "--style", DEMO_STYLE, "--out", out2, "--max-frames", "3", "--no-window",
            "--regions", "none"], capsys)
    assert len(list(out2.glob("*.png"))) == 3


def test_image_folder_source_and_config_file(photo, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), cv2.imread(str(photo)))
    cfg = tmp_path / "c.toml"
    # TOML is UTF-8 (with a BOM, as Windows' Notepad may save it): read as such whatever the locale says
    style = tmp_path / "Gemälde é.jpg"
    style.write_bytes(Path(DEMO_STYLE).read_bytes())
    cfg.write_bytes(("\ufeff" + f'style = ["{style}"]\nregions = "none"\nsize = "64"\nstrength = 0.5\n').encode())
    out = tmp_path / "o.avi"
    run_ok(["--source", d, "--config", cfg, "--out", out, "--no-window"], capsys)
    assert count_frames(out) == 3


def test_config_values_are_checked_like_the_command_line(photo, tmp_path, capsys, monkeypatch):
    """--config values go through each option's type and choices (one line, status 2, before any network
    loads); a config's source is used (it was ignored: --source had a default); the command line wins."""
    import engines.weights
    cfg = tmp_path / "c.toml"
    bad = {'strength = "high"': "strength: invalid value 'high'", 'mode = "foo"': "mode must be one of linear, adain",
           'keep_colors = "yes"': "must be true or false", 'size = [1, 2]': "takes one value",
           'layer = 3': "layer must be one of relu3_1, relu4_1", 'max_frames = "x"': "max_frames: invalid"}
    for line, msg in bad.items():
        cfg.write_text(f'style = "{DEMO_STYLE}"\n{line}\n')
        assert msg in run_bad(["--source", photo, "--config", cfg], capsys), line

    def stop(*a, **k):
        raise AssertionError("networks loading")
    monkeypatch.setattr(engines.weights, "load_encoder_weights", stop)
    # the config's source, with the config's typed values (an integer size becomes "64")
    cfg.write_text(f'source = "{tmp_path / "missing.jpg"}"\nstyle = "{DEMO_STYLE}"\nsize = 64\nstrength = 1\n')
    assert "missing.jpg" in run_bad(["--config", cfg], capsys)
    # and the command line's over it
    assert "other.jpg" in run_bad(["--config", cfg, "--source", tmp_path / "other.jpg"], capsys)
    with pytest.raises(AssertionError, match="networks loading"):
        main(["--config", str(cfg), "--source", str(photo), "-q"])


def test_demo_clip_is_bundled():
    assert DEMO_CLIP.is_file() and DEMO_STYLE.is_file()
    assert count_frames(DEMO_CLIP) >= 48


def test_bad_input_gives_one_line_and_status_2(photo, tmp_path, capsys):
    assert "not found" in run_bad(["--source", tmp_path / "nope.jpg", "--style", DEMO_STYLE], capsys)
    assert "style image not found" in run_bad(["--source", photo, "--style", tmp_path / "no.jpg"], capsys)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    assert "cannot read" in run_bad(["--source", junk, "--style", DEMO_STYLE, "--out", tmp_path / "x.png"], capsys)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((10, 10, 3), np.uint8))
    assert "at least" in run_bad(["--source", photo, "--style", tiny, "--out", tmp_path / "x.png"], capsys)
    assert "--strength" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--strength", "2"], capsys)
    assert "--deflicker" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--deflicker", "1"], capsys)
    assert "size" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--size", "axb"], capsys)
    assert "--style" in run_bad(["--source", photo], capsys)
    assert "unknown output" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "o.xyz"],
                                       capsys)
    a_file = tmp_path / "notes"
    a_file.write_text("x")
    assert "not a folder" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out", a_file], capsys)
    assert "one image" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--method", "gatys",
                                   "--out", tmp_path / "g.mp4"], capsys)
    bad_map = tmp_path / "map.png"
    cv2.imwrite(str(bad_map), np.full((50, 50, 3), (200, 40, 240), np.uint8))
    assert "label colours" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--style-regions", bad_map,
                                       "--out", tmp_path / "x.png"], capsys)
    # label maps pair with the paintings by position: `auto` leaves the first to MediaPipe, so the bad map
    # given second is the second painting's, and refused as such
    assert "label colours" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--style", DEMO_STYLE,
                                       "--style-regions", "auto", "--style-regions", bad_map,
                                       "--out", tmp_path / "x.png"], capsys)
    if not torch.cuda.is_available():
        assert "CUDA" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--device", "cuda"], capsys)
        assert "fp16" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--fp16"], capsys).lower()
    assert not (tmp_path / "x.png").exists()


def test_bad_out_fails_before_any_network_loads(photo, tmp_path, capsys, monkeypatch):
    import engines.weights

    def no_networks(*a, **k):
        raise AssertionError("a network was loaded before --out was checked")
    monkeypatch.setattr(engines.weights, "load_encoder_weights", no_networks)
    clip = tmp_path / "frames"
    clip.mkdir()
    for i in range(2):
        cv2.imwrite(str(clip / f"{i}.png"), cv2.imread(str(photo)))
    assert "many frames" in run_bad(["--source", clip, "--style", DEMO_STYLE, "--out", tmp_path / "o.png",
                                     "--no-window"], capsys)
    assert "unknown output" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "o.xyz"],
                                       capsys)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)            # --vcam without its extra, before loading
    assert 'pip install -e ".[vcam]"' in run_bad(["--source", photo, "--style", DEMO_STYLE, "--vcam"], capsys)
    # a file where a folder must be, the output's folder not writable, the output being an input
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for out in (a_file / "o.png", a_file / "sub" / "o.mp4", a_file / "frames"):
        assert "is a file, not a folder" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out", out], capsys)
    (tmp_path / "dir.png").mkdir()
    assert "is a folder" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "dir.png"], capsys)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(photo.read_bytes())
    for args in (["--source", copy, "--style", DEMO_STYLE], ["--source", photo, "--style", copy]):
        assert "also an input" in run_bad(args + ["--out", tmp_path / "." / "copy.jpg"], capsys)
    assert copy.read_bytes() == photo.read_bytes()
    ro = tmp_path / "ro"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real_access(p, m))
    ro.mkdir()
    for out in (ro / "o.png", ro / "new" / "o.mp4", ro / "frames"):
        assert f"no permission to create files in {ro}" in run_bad(
            ["--source", photo, "--style", DEMO_STYLE, "--out", out], capsys)
    assert not list(ro.iterdir())
    # what access() cannot tell (root on /sys, a read-only mount): a file is actually tried
    import realtime.output as O

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")
    with monkeypatch.context() as m:
        m.setattr(O.tempfile, "mkstemp", read_only)
        assert "Read-only file system" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--out",
                                                   tmp_path / "ro2.png"], capsys)
    for n in ("500", "0"):
        assert "converges only for --strength below 0.5" in run_bad(
            ["--source", photo, "--style", DEMO_STYLE, "--mode", "linear", "--iterations", n, "--out",
             tmp_path / "lin.png"], capsys)
    # the paintings and label maps are read before the networks too (a GPU's first run builds engines first)
    (tmp_path / "text.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    out = ["--out", tmp_path / "o2.png"]
    assert "cannot read an image" in run_bad(["--source", photo, "--style", tmp_path / "text.png"] + out, capsys)
    assert "is 8x8" in run_bad(["--source", photo, "--style", tmp_path / "tiny.png"] + out, capsys)
    assert "image not found" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--content-regions",
                                         tmp_path / "none.png"] + out, capsys)
    assert "cannot read an image" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--style-regions",
                                              tmp_path / "text.png"] + out, capsys)
    # a glob of stylecam's own frames styled into their own folder would overwrite them
    (tmp_path / "g").mkdir()
    cv2.imwrite(str(tmp_path / "g" / "frame_000000.png"), cv2.imread(str(photo)))
    assert "holds input frames" in run_bad(["--source", str(tmp_path / "g" / "*.png"), "--style", DEMO_STYLE,
                                            "--out", tmp_path / "g"], capsys)


def test_an_output_that_cannot_be_written_fails_the_run(photo, tmp_path, capsys, monkeypatch):
    """What check_writable cannot foresee (here: the image's final write refused) is a failed run, exit
    status 1 with one line naming the output, not a log line and status 0."""
    import realtime.output

    def refuse(path, img):
        raise PermissionError(13, "Permission denied", str(Path(path).parent / ".tmp123.png"))
    monkeypatch.setattr(realtime.output, "write_image", refuse)
    out = tmp_path / "o.png"
    rc = main([str(a) for a in ["--source", photo, "--style", DEMO_STYLE, "--out", out, "--size", "64", "-q"]])
    cap = capsys.readouterr()
    assert rc == 1 and str(out) not in cap.out
    assert cap.err.strip().splitlines()[-1] == f"stylecam: error: cannot write {out}: Permission denied"
    assert not out.exists()


def test_a_processing_size_beyond_the_free_memory_is_one_clear_error(photo, clip, tmp_path, capsys, monkeypatch):
    """--size 8192x8192 on a 24 GB machine was killed by the system after 85 s; now the size is checked
    against the free memory (engines.memory.BYTES_PER_PIXEL) before the networks run on it."""
    import engines.memory as M
    assert M.available_bytes("cpu") > 0                               # /proc/meminfo is read here
    monkeypatch.setattr(M, "available_bytes", lambda device: 2 * 10 ** 9)
    with pytest.raises(ValueError, match="needs about 5.3 GB of memory but 2.0 GB are free"):
        M.check_processing_size(2048, 2048, "cpu")
    M.check_processing_size(1024, 1024, "cpu")                       # 1.3 GB: fits
    for args in (["--source", photo, "--out", tmp_path / "o.png"], ["--source", clip, "--out", tmp_path / "o.avi"],
                 ["--source", photo, "--out", tmp_path / "g.png", "--method", "gatys"]):
        assert "choose a smaller --size" in run_bad(args + ["--style", DEMO_STYLE, "--size", "2048x2048"], capsys)
    assert not list(tmp_path.iterdir())
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "o.png", "--size", "96"], capsys)


def test_ctrl_c_while_loading_is_one_line_and_status_130(photo, tmp_path, capsys, monkeypatch):
    import engines.weights

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engines.weights, "load_encoder_weights", interrupted)
    assert main(["--source", str(photo), "--style", str(DEMO_STYLE), "--out", str(tmp_path / "o.png")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "stylecam: interrupted"
    assert not list(tmp_path.iterdir())


def test_small_refusals_and_warnings(photo, tmp_path, capsys, caplog):
    """A folder given as --style says so; gatys refuses a style too small for the encoder as the decoder
    method does; --iterations where the mode ignores it is a warning; --version answers."""
    assert "is a folder" in run_bad(["--source", photo, "--style", tmp_path], capsys)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((8, 8, 3), np.uint8))
    assert "at least 32 pixels" in run_bad(["--source", photo, "--style", tiny, "--method", "gatys",
                                            "--out", tmp_path / "g.png"], capsys)
    run_ok(["--source", photo, "--style", DEMO_STYLE, "--out", tmp_path / "o.png", "--size", "64",
            "--iterations", "3", "--regions", "none"], capsys)
    assert "adain ignores it" in caplog.text
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("stylecam ")


def test_a_thin_processing_size_and_a_stretched_content_map_are_said(photo, tmp_path, capsys, caplog):
    """A 4000x200 panorama reduced to 640x32 keeps little detail, and a content label map of another
    shape is stretched: both worked silently before; each is now a warning."""
    pano = tmp_path / "pano.png"
    cv2.imwrite(str(pano), cv2.resize(cv2.imread(str(photo)), (1000, 50)))
    lab = tmp_path / "lab.png"
    cv2.imwrite(str(lab), np.zeros((60, 30, 3), np.uint8))             # all background, 1:2 against 20:1
    run_ok(["--source", pano, "--style", DEMO_STYLE, "--out", tmp_path / "o.png", "--content-regions", lab], capsys)
    assert "little detail survives" in caplog.text and "640x32" in caplog.text
    assert "the map is stretched to fit" in caplog.text


def test_a_lost_camera_fails_the_run_and_ctrl_c_before_the_first_frame_is_130(photo, tmp_path, capsys,
                                                                              monkeypatch):
    """A camera that goes away for good ended the run with status 0, like a normal quit: now 1 with one
    line (the recording is still written). Ctrl-C while waiting for the first frame said "no frame could
    be read" (status 2): now 130, as Ctrl-C while loading."""
    from realtime import capture
    img = cv2.imread(str(photo))

    class Cap:
        def __init__(self, frames):
            self.left = frames

        def isOpened(self):
            return True

        def read(self):
            self.left -= 1
            return (True, img) if self.left >= 0 else (False, None)

        def get(self, prop):
            return 0

        def release(self):
            pass

    opened = []

    def open_fn(index):
        opened.append(index)
        return Cap(3) if len(opened) == 1 else None                 # never comes back
    monkeypatch.setattr(capture.CameraSource, "backoff_s", 0.0)
    monkeypatch.setattr(capture, "open_source", lambda spec: capture.CameraSource(0, open_fn=open_fn))
    out = tmp_path / "rec.avi"
    rc = main([str(a) for a in ["--source", "0", "--style", DEMO_STYLE, "--out", out, "--no-window", "--size", "64",
                                "-q", "--backend", "torch"]])
    assert rc == 1 and "camera 0 lost" in capsys.readouterr().err
    import inspect
    tries = inspect.signature(capture.CameraSource).parameters["reconnects"].default
    assert count_frames(out) >= 1 and len(opened) == 1 + tries          # every reconnect attempt made

    class Interrupted(capture.FrameSource):
        def __iter__(self):
            raise KeyboardInterrupt
            yield
    monkeypatch.setattr(capture, "open_source", lambda spec: Interrupted())
    assert main([str(a) for a in ["--source", "0", "--style", DEMO_STYLE, "--out", tmp_path / "r2.avi",
                                  "--no-window", "--size", "64", "-q", "--backend", "torch"]]) == 130
    assert not (tmp_path / "r2.avi").exists()


class LiveFrames:
    """A live source (a camera's is_live, 10 fps) of three frames captured 200 ms apart, then ``end()``.
    In a 10 fps recording they fill slots 0-1 and 2-3, and the last one, held until the next frame that
    never comes, one slot when the file is finalised: 5 frames."""
    SLOTS = 5

    @staticmethod
    def source(img, end):
        from realtime import capture

        class Live(capture.FrameSource):
            is_live, fps = True, 10.0

            def __iter__(self):
                for i in range(3):
                    yield img, 200.0 * i
                end()
                for i in range(3, 50):          # a stop that did not stop the loop shows as more frames
                    yield img, 200.0 * i
        return Live()


def test_ctrl_c_mid_stream_keeps_the_frames_and_exits_0(photo, tmp_path, capsys, caplog, monkeypatch):
    """Ctrl-C while frames flow (the usual end of a camera session) finalises the outputs: the recording
    holds every frame so far, at the capture's pace, under its name (no temporary file left), the log says
    it was interrupted, and the run is a success (status 0, the output named), not 130."""
    from realtime import capture
    img = cv2.imread(str(photo))

    def ctrl_c():
        raise KeyboardInterrupt
    monkeypatch.setattr(capture, "open_source", lambda spec: LiveFrames.source(img, ctrl_c))
    out = tmp_path / "r.avi"
    with caplog.at_level("WARNING"):
        rc = main([str(a) for a in ["--source", "0", "--style", DEMO_STYLE, "--out", out, "--no-window",
                                    "--size", "64", "--regions", "none", "--backend", "torch", "-q"]])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.strip() == str(out)
    assert "interrupted: finalising outputs" in caplog.text
    assert count_frames(out) == LiveFrames.SLOTS
    assert [f.name for f in tmp_path.iterdir()] == ["r.avi"]


_SIGTERM_CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import cv2
from realtime import capture
from realtime.cli import DEMO_STYLE, main
from test_cli import LiveFrames

def kill():
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):                  # the handler runs between bytecodes
        pass

img = cv2.imread(sys.argv[2])
capture.open_source = lambda spec: LiveFrames.source(img, kill)
sys.exit(main(["--source", "0", "--style", str(DEMO_STYLE), "--out", sys.argv[3], "--no-window", "--size", "64",
               "--regions", "none", "--backend", "torch", "-q"]))
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals: os.kill(pid, SIGTERM) ends a process on Windows outright")
def test_sigterm_mid_stream_keeps_the_frames_and_exits_0(photo, tmp_path):
    """`kill` (SIGTERM) while frames flow ends the run as Ctrl-C does, in a process of its own (a signal
    the CLI failed to catch would otherwise end the test session): status 0, the frames so far written."""
    out = tmp_path / "r.avi"
    r = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, str(ROOT), str(photo), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "interrupted: finalising outputs" in r.stderr
    assert count_frames(out) == LiveFrames.SLOTS
    assert [f.name for f in tmp_path.iterdir()] == ["r.avi"]


_SIGNALS_CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from realtime.cli import stop_signals_interrupt

def spin():
    for _ in range(1000):                  # the handler runs between bytecodes
        pass

def handlers():
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)

before = handlers()
for sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        with stop_signals_interrupt():
            os.kill(os.getpid(), sig)
            spin()
        print("not interrupted by", sig.name)
    except KeyboardInterrupt:
        print("interrupted by", sig.name)
print("handlers put back:", handlers() == before)
# the second of two (a closing terminal sends SIGHUP twice) does not break into the finalising
with stop_signals_interrupt():
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        spin()
    except KeyboardInterrupt:
        os.kill(os.getpid(), signal.SIGHUP)
        spin()
        print("second SIGHUP ignored")
print("handlers put back:", handlers() == before)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="SIGHUP: POSIX only")
def test_kill_and_hangup_stop_a_run_as_ctrl_c_does():
    """SIGTERM/SIGHUP while frames flow lost a recording whole (its temporary file never renamed); they
    now raise KeyboardInterrupt in the loop, which finalises the outputs; the handlers are put back after.
    Run in a child process: a handler that is not installed ends the child (status -15), not the tests."""
    r = subprocess.run([sys.executable, "-c", _SIGNALS_CHILD, str(ROOT)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert r.stdout.splitlines() == ["interrupted by SIGTERM", "interrupted by SIGHUP", "handlers put back: True",
                                     "second SIGHUP ignored", "handlers put back: True"]


def test_no_camera_suggests_a_file_or_the_demo(capsys):
    msg = run_bad(["--source", "57", "--style", DEMO_STYLE, "--no-window", "--out", "/tmp/never.mp4"], capsys)
    assert "--demo" in msg and "--source FILE" in msg


def test_run_cam_help_and_console_script_share_main():
    r = subprocess.run([sys.executable, str(ROOT / "run_cam.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--style-regions" in r.stdout and "--demo" in r.stdout
    import run_cam
    from realtime.cli import entry
    assert run_cam.entry is entry
    assert 'stylecam = "realtime.cli:entry"' in (ROOT / "pyproject.toml").read_text()


NATIVE = (b"W0000 00:00:1795873691.558968   24195 inference_feedback_manager.cc:114] Feedback manager requires a "
          b"model with a single signature inference. Disabling support for feedback tensors.\n"
          b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
          b"E0000 00:00:1795873691.6 24195 calculator_graph.cc:887] a real native error\n")


@pytest.mark.parametrize("end", ["exit", "abort", "all"])
def test_mediapipe_start_up_lines_are_filtered_and_nothing_else(end):
    """realtime/native_log.py: descriptor 2's known MediaPipe lines dropped, any other native line and
    everything Python writes passed on, in order for Python's; a native line written just before the
    process aborts still comes out (the filter is a child process); STYLECAM_NATIVE_LOG=all: no filter."""
    code = ("import os, sys\n"
            "from realtime import native_log\n"
            f"assert native_log.install() is {end != 'all'}\n"
            "print('python says hello', file=sys.stderr)\n"
            f"os.write(2, {NATIVE!r})\n"
            + ("os.abort()\n" if end == "abort" else "print('python says bye', file=sys.stderr)\n"))
    env = dict(os.environ, STYLECAM_NATIVE_LOG="all" if end == "all" else "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env, timeout=60)
    err = r.stderr.decode()
    assert "python says hello" in err and "a real native error" in err, err
    if end == "all":
        assert "Feedback manager" in err and "XNNPACK" in err and "InitializeLog" in err
    else:
        assert "Feedback manager" not in err and "XNNPACK" not in err and "InitializeLog" not in err, err
    if end == "abort":
        assert r.returncode != 0
    else:
        assert r.returncode == 0 and err.index("hello") < err.index("bye")


def test_onnx_backend_gives_the_same_frames_as_torch(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "torch.png", tmp_path / "onnx.png"
    args = ["--source", photo, "--style", DEMO_STYLE, "--regions", "none", "--size", "120"]
    run_ok(args + ["--out", a, "--backend", "torch"], capsys)
    run_ok(args + ["--out", b, "--backend", "onnx"], capsys)
    assert list((tmp_path / "cache" / "engines").glob("*.onnx"))       # exported once, cached
    diff = np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(b)).astype(int))
    assert diff.max() <= 2                                             # within rounding of 8-bit output


def test_int8_networks_give_nearly_the_same_frames(photo, tmp_path, capsys, monkeypatch):
    """--int8 quantizes the encoder and the decoder once each (cached), and its still differs from
    FP32 ONNX Runtime's by a little, not by nothing (it did run quantized) and not by much."""
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    import export.int8
    calls = []
    real = export.int8.quantize
    monkeypatch.setattr(export.int8, "quantize", lambda *a, **k: calls.append(a) or real(*a, **k))
    a, b, c = tmp_path / "fp32.png", tmp_path / "int8.png", tmp_path / "int8_again.png"
    args = ["--source", photo, "--style", DEMO_STYLE, "--regions", "none", "--size", "120", "--backend", "onnx"]
    run_ok(args + ["--out", a], capsys)
    run_ok(args + ["--out", b, "--int8"], capsys)
    run_ok(args + ["--out", c, "--int8"], capsys)
    assert len(calls) == 2
    for what in ("encoder", "decoder"):
        assert len(list((tmp_path / "cache" / "engines").glob(f"{what}_*_int8*.onnx"))) == 1
    diff = np.abs(cv2.imread(str(a)).astype(float) - cv2.imread(str(b)).astype(float))
    assert 0.05 < diff.mean() < 6, diff.mean()
    assert np.array_equal(cv2.imread(str(b)), cv2.imread(str(c)))
    monkeypatch.setattr(export.int8, "RECIPE", export.int8.RECIPE + 1)      # a new recipe: quantized afresh
    run_ok(args + ["--out", c, "--int8"], capsys)
    assert len(calls) == 4 and len(list((tmp_path / "cache" / "engines").glob("decoder_*_int8*.onnx"))) == 2
    for bad in (["--backend", "torch"], ["--method", "gatys"]):
        assert "--int8" in run_bad(["--source", photo, "--style", DEMO_STYLE, "--int8"] + bad, capsys)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
                    reason="TensorRT and a GPU are present: the error path does not apply")
def test_tensorrt_backend_without_tensorrt_or_gpu_is_one_clear_error(photo, capsys):
    msg = run_bad(["--source", photo, "--style", DEMO_STYLE, "--backend", "tensorrt"], capsys)
    assert "TensorRT" in msg or "GPU" in msg


def test_pytorch_engines_default_to_channels_last_and_cuda_graphs_on_cuda_only(monkeypatch):
    """make_engines: the PyTorch engines run in channels_last on CUDA unless told otherwise
    (benchmarks/fps.py --no-channels-last), NCHW on the CPU (channels_last_default); replayed from
    CUDA graphs on CUDA unless told otherwise (--no-cuda-graph), never on the CPU
    (cuda_graph_default).  load_engine is recorded rather than run, so this needs no GPU."""
    import argparse

    import engines.base
    from realtime.cli import channels_last_default, cuda_graph_default, make_engines
    seen = []
    monkeypatch.setattr(engines.base, "load_engine", lambda kind, device, prec, module, channels_last, cuda_graph:
                        seen.append((device.type, channels_last, cuda_graph)))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for device, flags in ((cuda, {}), (cpu, {}), (cuda, {"channels_last": False}), (cpu, {"channels_last": True}),
                          (cuda, {"cuda_graph": False}), (cuda, {"cuda_graph": None})):
        args = argparse.Namespace(backend="torch", fp16=device.type == "cuda", **flags)
        make_engines(args, None, None, None, None, device)
    assert seen == ([("cuda", True, True)] * 2 + [("cpu", False, False)] * 2 + [("cuda", False, True)] * 2
                    + [("cpu", True, False)] * 2 + [("cuda", True, False)] * 2 + [("cuda", True, True)] * 2)
    assert channels_last_default(cuda) and not channels_last_default(cpu)
    assert cuda_graph_default(cuda) and not cuda_graph_default(cpu)


def test_cuda_graph_asked_where_it_cannot_apply_is_ignored_with_a_warning(monkeypatch, caplog):
    """--cuda-graph on the CPU (or with another backend) cannot be honoured: say so rather than ignore
    it silently; the engines are built as without it."""
    import argparse

    import engines.base
    from realtime.cli import make_engines
    seen = []
    monkeypatch.setattr(engines.base, "load_engine", lambda kind, device, prec, module, channels_last, cuda_graph:
                        seen.append(cuda_graph))
    with caplog.at_level("WARNING", logger="stylecam"):
        make_engines(argparse.Namespace(backend="torch", fp16=False, cuda_graph=True), None, None, None, None,
                     torch.device("cpu"))
    assert "--cuda-graph applies to the PyTorch backend on CUDA only" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="stylecam"):
        make_engines(argparse.Namespace(backend="torch", fp16=False, cuda_graph=None), None, None, None, None,
                     torch.device("cpu"))
    assert "--cuda-graph" not in caplog.text                     # the default says nothing
