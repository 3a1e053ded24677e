"""Sources, regions, styles, the stylizer's temporal state, outputs and the loop."""
import dataclasses
import os
import sys

import cv2
import numpy as np
import pytest
import torch

from realtime import capture, output, segment
from realtime.images import keep_colors, parse_size, read_image, to_bgr_uint8
from realtime.pipeline import Pipeline


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_read_image_turns_exif_oriented_images_upright_as_pillow_does(tmp_path, fmt):
    """A phone's JPEG stores its pixels sideways with an EXIF orientation tag; reading it the way OpenCV's
    IMREAD_UNCHANGED does (alpha, 16 bits) ignored the tag: portraits came out lying on their side."""
    from PIL import Image, ImageOps
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur((rng.random((30, 50, 3)) * 255).astype(np.uint8), (5, 5), 0)
    a[:6, :12] = 255                                       # a corner that shows where the top-left went
    for orientation in range(1, 9):
        im = Image.fromarray(a)
        exif = im.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.{fmt}"
        im.save(path, exif=exif, **({"quality": 100} if fmt == "jpg" else {}))
        ours = read_image(path)[..., ::-1].astype(int)                  # BGR -> RGB
        with Image.open(path) as stored:
            ref = np.asarray(ImageOps.exif_transpose(stored).convert("RGB")).astype(int)
        assert ours.shape == ref.shape, orientation
        assert np.abs(ours - ref).mean() < 2.0, orientation          # the same pixels (JPEG: two decoders)
        if orientation in (5, 6, 7, 8):
            assert ours.shape[:2] == (50, 30)


def test_folder_output_holds_this_runs_frames_only(tmp_path):
    """A shorter run into a folder an earlier run wrote used to leave that run's later frames beside its
    own; our frame_NNNNNN files beyond this run's are removed, any other file is kept."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        (folder / f"frame_{i:06d}.png").write_bytes(b"old")
    (folder / "notes.png").write_bytes(b"mine")
    (folder / "frame_1.png").write_bytes(b"mine too")
    sink = output.FolderSink(folder)
    sink.send(np.zeros((4, 4, 3), np.uint8))
    sink.close()
    assert sorted(f.name for f in folder.iterdir()) == ["frame_000000.png", "frame_1.png", "notes.png"]
    assert (folder / "frame_000000.png").read_bytes() != b"old"
    assert output.is_frame_name("frame_000012.jpg") and not output.is_frame_name("frame_12.png")
    # a run stopped before its first frame leaves an earlier run's frames alone
    output.FolderSink(folder).close()
    assert (folder / "frame_000000.png").exists()


def test_camera_open_keeps_opencvs_own_warnings_off_the_console():
    """A missing camera index made OpenCV's backends print two lines of their own before our one-line
    error; they are silenced while opening (and the level restored)."""
    before, seen = cv2.getLogLevel(), []

    def fake_open(index):
        seen.append(cv2.getLogLevel())
        return None
    with pytest.raises(capture.SourceError, match="no camera at index 3"):
        capture.CameraSource(3, open_fn=fake_open)
    assert seen == [0] and cv2.getLogLevel() == before


def test_paths_as_a_user_has_them(tmp_path, monkeypatch):
    """A video named like yt-dlp's "clip [1080p].mp4" is a file, not a glob; an --out that is an input under
    another name (a hard link here; macOS's case-insensitive disks the same way) is refused; a final rename
    that fails (Windows: the file open in a player) names the finished temporary file."""
    from realtime.images import publish
    from realtime.output import check_writable
    clip = tmp_path / "clip [1080p].avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    w.write(np.zeros((24, 32, 3), np.uint8))
    w.release()
    src = capture.open_source(str(clip))
    assert isinstance(src, capture.VideoFileSource)
    src.close()
    os.link(clip, tmp_path / "same.avi")
    with pytest.raises(ValueError, match="also an input"):
        check_writable(tmp_path / "same.avi", "video", inputs=(str(clip),))
    sink = output.VideoFileSink(tmp_path / "x.avi", fps=10.0)
    sink.send(np.zeros((24, 32, 3), np.uint8))

    def refuse(a, b):
        raise PermissionError(13, "Access is denied")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError, match="the finished video is kept as"):
        sink.close()
    assert sink.tmp.is_file() and sink.tmp.stat().st_size > 0         # the recording, not thrown away
    with pytest.raises(PermissionError):                               # the plain error for other files
        publish(sink.tmp, tmp_path / "y.avi")


def test_image_conversions(tmp_path):
    g = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    assert to_bgr_uint8(g).shape == (12, 10, 3)
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[0, :, 3], rgba[1, :, 3], rgba[2:, :, 3] = 255, 128, 0       # opaque, half, transparent rows
    out = to_bgr_uint8(rgba)
    assert out.shape == (5, 7, 3) and out.flags.c_contiguous
    assert out[0, 0].tolist() == [0, 0, 200]                           # opaque: as it is
    assert out[1, 0].tolist() == [127, 127, 227]                       # half: halfway to white
    assert out[4, 0].tolist() == [255, 255, 255]                       # transparent: white, as a viewer shows
    deep = np.full((4, 4, 3), 65535, np.uint16)
    assert to_bgr_uint8(deep).max() == 255 and to_bgr_uint8(deep).dtype == np.uint8
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), (np.random.rand(9, 11) * 65535).astype(np.uint16))
    assert read_image(p).shape == (9, 11, 3)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "none.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(empty)


def test_parse_size():
    assert parse_size("640x360") == (640, 360)
    assert parse_size("512") == (512, 0)
    assert parse_size(None) is None
    for bad in ("0x10", "abc", "10x", "99999x10"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_keep_colors_keeps_chroma_and_takes_luma():
    a = np.full((8, 8, 3), (30, 200, 90), np.uint8)
    b = np.full((8, 8, 3), 128, np.uint8)
    out = keep_colors(b, a)
    ya = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)
    assert abs(int(ya[0, 0, 0]) - 128) <= 2
    assert np.abs(ya[0, 0, 1:].astype(int) - cv2.cvtColor(a, cv2.COLOR_BGR2YCrCb)[0, 0, 1:]).max() <= 3


# ---------------------------------------------------------------- regions

def test_label_map_colours_and_tolerance():
    lab = np.zeros((20, 30, 3), np.uint8)
    lab[:, 10:] = (0, 0, 255)        # BGR red = person
    lab[5:10, 15:20] = (0, 250, 5)   # nearly green = face
    m = segment.label_map_to_masks(lab)
    assert m.shape == (3, 20, 30)
    np.testing.assert_allclose(m.sum(0), 1)
    assert m[0, :, :10].min() == 1 and m[2, 5:10, 15:20].min() == 1 and m[1, 0, 25] == 1
    small = segment.label_map_to_masks(lab, size=(10, 15))
    assert small.shape == (3, 10, 15)
    np.testing.assert_allclose(small.sum(0), 1, atol=1e-5)
    with pytest.raises(ValueError, match="label colours"):
        segment.label_map_to_masks(np.full((4, 4, 3), (255, 0, 255), np.uint8))


def test_mediapipe_portrait_regions_on_a_real_portrait(portrait_bgr):
    with segment.MediaPipeSegmenter("portrait", static=True) as seg:
        m = seg(portrait_bgr)
    assert m.shape == (3, *portrait_bgr.shape[:2])
    np.testing.assert_allclose(m.sum(0), 1, atol=1e-5)
    h, w = portrait_bgr.shape[:2]
    face, person, bg = m[2], m[1], m[0]
    # Grace Hopper's face is around (x=0.5, y=0.45); her uniform at the bottom centre;
    # the top corners are flag and wall
    assert face[int(0.45 * h), int(0.5 * w)] > 0.9
    assert person[int(0.9 * h), int(0.5 * w)] > 0.9
    assert bg[5, 5] > 0.9 and bg[5, w - 5] > 0.9
    assert 0.03 < face.mean() < 0.3


def test_mediapipe_video_mode_smooths_over_time(portrait_bgr):
    seg = segment.MediaPipeSegmenter("person", static=False, smoothing=0.5)
    a = seg(portrait_bgr)
    blank = np.full_like(portrait_bgr, 127)
    b = seg(blank)                  # the person vanishes: the mask decays, it does not jump to 0
    seg.close()
    centre = (int(0.8 * a.shape[1]), a.shape[2] // 2)
    assert a[1][centre] > 0.9
    assert 0.3 < b[1][centre] < 0.7


def test_label_map_segmenter_takes_arrays_and_makes_each_size_once():
    """A label map given as an array works like a file; the masks of a size are made once and handed
    out again on the next frame of that size (video), remade when the size changes."""
    lab = np.zeros((20, 30, 3), np.uint8)
    lab[5:, 10:20] = (0, 0, 255)                      # person (red, as BGR)
    lab[6:10, 12:18] = (0, 255, 0)                    # face
    seg = segment.make_segmenter("portrait", label_map=lab)
    assert isinstance(seg, segment.LabelMapSegmenter)
    a = seg(np.zeros((40, 60, 3), np.uint8))
    assert a.shape == (3, 40, 60) and np.allclose(a.sum(0), 1)
    np.testing.assert_array_equal(a, segment.label_map_to_masks(lab, segment.REGION_SETS["portrait"], (40, 60)))
    assert seg(np.ones((40, 60, 3), np.uint8)) is a                  # same size: not recomputed
    b = seg(np.zeros((10, 15, 3), np.uint8))
    assert b.shape == (3, 10, 15) and b is not a
    with pytest.raises(ValueError, match="label colours"):
        segment.make_segmenter("portrait", label_map=np.full((4, 4, 3), (255, 0, 255), np.uint8))


def test_make_segmenter_choices(tmp_path):
    assert isinstance(segment.make_segmenter("none"), segment.WholeFrameSegmenter)
    with pytest.raises(ValueError, match="regions must be one of"):
        segment.make_segmenter("faces")
    with pytest.raises(FileNotFoundError):
        segment.make_segmenter("portrait", label_map=tmp_path / "none.png")


# ---------------------------------------------------------------- sources

def test_video_source_reads_every_frame_in_order(tmp_path):
    p = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(12):
        w.write(np.full((24, 32, 3), i * 20, np.uint8))
    w.release()
    frames = [f for f, _ in capture.VideoFileSource(p)]
    assert len(frames) == 12
    assert [int(f.mean() // 20) for f in frames] == list(range(12))   # in order, none dropped
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(capture.SourceError):
        list(capture.VideoFileSource(empty))


class TruncatedVideo:
    """cv2.VideoCapture's surface for a file whose header promises 12 frames at 10 fps of which 5 decode
    (a recording cut short; OpenCV's own reader refuses some cut files outright, so a real cut file cannot
    tell whether the source ends at its last good frame)."""

    def __init__(self, path):
        self.read_calls, self.released = 0, False

    def isOpened(self):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_COUNT: 12, cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_WIDTH: 32,
                cv2.CAP_PROP_FRAME_HEIGHT: 24}.get(prop, 0)

    def read(self):
        self.read_calls += 1
        if self.read_calls <= 5:
            return True, np.full((24, 32, 3), 20 * self.read_calls, np.uint8)
        return False, None

    def release(self):
        self.released = True


def test_a_truncated_video_ends_at_its_last_good_frame_with_a_warning(tmp_path, monkeypatch, caplog):
    p = tmp_path / "cut.avi"
    p.write_bytes(b"RIFF")
    monkeypatch.setattr(capture.cv2, "VideoCapture", TruncatedVideo)
    src = capture.VideoFileSource(p)
    assert src.expected == 12 and src.fps == 10.0 and src.frame_hw == (24, 32)
    with caplog.at_level("WARNING", logger="realtime.capture"):
        got = list(src)                                 # no exception: the good frames, then the end
    assert [int(f[0, 0, 0]) for f, _ in got] == [20, 40, 60, 80, 100]
    assert [t for _, t in got] == [0.0, 100.0, 200.0, 300.0, 400.0]
    assert "stopped after 5 of 12 frames" in caplog.text
    src.close()
    assert src.cap.released


class FakeCap:
    """A camera that gives n frames, then fails (optionally forever)."""

    def __init__(self, frames, opened=True):
        self.frames, self.opened, self.i = frames, opened, 0

    def isOpened(self):
        return self.opened

    def read(self):
        if self.i < self.frames:
            self.i += 1
            return True, np.full((8, 8, 3), self.i, np.uint8)
        return False, None

    def get(self, prop):
        return 30.0

    def set(self, *a):
        return True

    def release(self):
        pass


def test_camera_reconnects_then_ends_cleanly(monkeypatch, caplog):
    """reconnects=2: the camera opened at the start (frames 1-5), lost and reopened (frames 6-10), lost again,
    then two reopened cameras that give nothing: 4 opens in all, then the stream ends and says it gave up.
    Only the newest frame is handed over, never one twice: their numbers only go up, and the last one comes."""
    monkeypatch.setattr(capture.CameraSource, "backoff_s", 0.0)
    opened, made = [], [0]

    class NumberedCap(FakeCap):
        def read(self):
            ok, _ = super().read()
            if not ok:
                return False, None
            made[0] += 1                                   # numbered across cameras: 1, 2, ... 10
            return True, np.full((8, 8, 3), made[0], np.uint8)

    def open_fn(i):
        opened.append(i)
        return NumberedCap(5 if len(opened) <= 2 else 0)   # the first and the reconnected camera give 5 frames

    cam = capture.CameraSource(0, reconnects=2, open_fn=open_fn)
    with caplog.at_level("WARNING", logger="realtime.capture"):
        got = [int(f[0, 0, 0]) for f, _ in cam]
    cam.close()
    assert opened == [0, 0, 0, 0]                       # the first open and one per reconnect attempt
    assert cam.gave_up and "giving up after 2 reconnect attempts" in caplog.text
    assert caplog.text.count("reconnecting (1/2)") == 2 and caplog.text.count("reconnecting (2/2)") == 1
    assert got and got[-1] == 10 and all(a < b for a, b in zip(got, got[1:])), got


def test_camera_hands_over_the_newest_frame_and_never_a_backlog():
    """A stylizer slower than the camera: while it works on frame 1 the camera makes frames 2, 3 and 4; the
    next frame it gets is 4 (2 and 3 are dropped, never queued), then 5 as it comes. The camera's reads are
    released one by one by the test, so the order is fixed, not a matter of timing."""
    import threading

    class GatedCap(FakeCap):
        def __init__(self):
            super().__init__(5)
            self.allow = threading.Semaphore(0)

        def read(self):
            self.allow.acquire()
            return super().read()

    gate = GatedCap()
    cam = capture.CameraSource(0, reconnects=0, open_fn=lambda i: gate)

    def made(n):                                       # wait until the camera thread has published frame n
        with cam._cond:
            assert cam._cond.wait_for(lambda: cam._seq == n, timeout=30), cam._seq

    frames = iter(cam)
    gate.allow.release()
    got = [int(next(frames)[0][0, 0, 0])]
    for _ in range(3):
        gate.allow.release()
    made(4)                                            # frames 2, 3, 4 made while frame 1 was being stylized
    got.append(int(next(frames)[0][0, 0, 0]))
    gate.allow.release()
    got.append(int(next(frames)[0][0, 0, 0]))
    gate.allow.release()                               # the sixth read fails: no reconnect, the stream ends
    gate.allow.release()
    assert list(frames) == [] and got == [1, 4, 5]
    cam.close()


def test_no_camera_is_a_clear_error():
    with pytest.raises(capture.SourceError, match="--demo"):
        capture.CameraSource(3, open_fn=lambda i: FakeCap(0, opened=False))


def test_open_source_dispatch(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(capture.open_source(img), capture.ImageSource)
    assert isinstance(capture.open_source(tmp_path), capture.ImageFolderSource)
    assert isinstance(capture.open_source(str(tmp_path / "*.png")), capture.ImageFolderSource)
    with pytest.raises(FileNotFoundError):
        capture.open_source(tmp_path / "missing.mp4")


@pytest.mark.parametrize("as_glob", [False, True])
def test_folder_source_plays_in_name_order_and_skips_an_unreadable_image(tmp_path, monkeypatch, caplog, as_glob):
    """An image folder (or glob) plays its files in name order, whatever order the file system lists them
    in (here: reversed), and an image that cannot be read is skipped with one warning, not the end of the
    run."""
    import glob
    import pathlib
    levels = [10, 60, 110, 160, 210]
    for i, v in enumerate(levels):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), np.full((12, 16, 3), v, np.uint8))
    (tmp_path / "frame_002b.png").write_bytes(b"\x89PNG junk, not an image")     # between frames 2 and 3
    real_iterdir, real_glob = pathlib.Path.iterdir, glob.glob
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=True)))
    monkeypatch.setattr(glob, "glob", lambda spec: sorted(real_glob(spec), reverse=True))
    src = capture.open_source(str(tmp_path / "frame_*.png") if as_glob else tmp_path)
    assert isinstance(src, capture.ImageFolderSource) and len(src.files) == 6
    with caplog.at_level("WARNING", logger="realtime.capture"):
        got = [int(f.mean()) for f, _ in src]
    assert got == levels
    assert caplog.text.count("skipping") == 1 and "frame_002b.png" in caplog.text


# ---------------------------------------------------------------- outputs

def test_video_sink_is_atomic(tmp_path):
    p = tmp_path / "o.mp4"
    s = output.VideoFileSink(p, 10)
    for i in range(3):
        s.send(np.full((16, 16, 3), 50 * i, np.uint8))
    assert not p.exists()                       # nothing under the final name until complete
    s.close()
    assert p.exists() and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError):
        output.sink_for_path(tmp_path / "o.png", 10, many_frames=True)


# ---------------------------------------------------------------- stylizer

@pytest.fixture(scope="module")
def stylizer_parts(hed_weights):
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, weights_dir
    from realtime.cli import DEMO_STYLE
    from realtime.style import StyleBank
    enc = build_encoder("relu3_1", hed_weights)
    dec = load_decoder(weights_dir() / "decoder_relu3_1.pt", encoder_id=hed_weights.encoder_id)
    bank = StyleBank(enc, "none", max_side=128)
    bank.add(DEMO_STYLE)
    bank.add(DEMO_STYLE, image=cv2.flip(read_image(DEMO_STYLE), 0)[::2, ::2].copy())
    return enc, dec, bank


def test_linear_iteration_beyond_its_convergence_uses_the_exact_form(stylizer_parts, portrait_bgr, caplog):
    """The paper's linear iteration converges only below strength 0.5; a live + (or m into linear mode) used
    to reach 1.0, where it raised and ended the stream (and diverged to NaN between 0.5 and 1). There the
    stylizer uses the exact closed form, its limit, and says so once."""
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    bank.select(0)
    f = cv2.resize(portrait_bgr, (64, 72))
    for strength in (0.8, 1.0):
        it = Stylizer(StylizerConfig(mode="linear", strength=strength, iterations=500, size=(64, 0)), enc, dec, bank)
        exact = Stylizer(StylizerConfig(mode="linear", strength=strength, size=(64, 0)), enc, dec, bank)
        with caplog.at_level("WARNING"):
            a = it.stylize(f, None)
        assert np.array_equal(a, exact.stylize(f, None))
    assert "diverges" in caplog.text
    low = Stylizer(StylizerConfig(mode="linear", strength=0.3, iterations=500, size=(64, 0)), enc, dec, bank)
    exact = Stylizer(StylizerConfig(mode="linear", strength=0.3, size=(64, 0)), enc, dec, bank)
    assert np.abs(low.stylize(f, None).astype(int) - exact.stylize(f, None).astype(int)).max() <= 2   # converged


def test_stylizer_scene_cut_and_style_switch_reset_the_state(stylizer_parts, portrait_bgr):
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    st = Stylizer(StylizerConfig(mode="linear", size=(96, 0), momentum=0.9), enc, dec, bank)
    f = cv2.resize(portrait_bgr, (96, 112))
    out = st.stylize(f)
    assert out.shape == f.shape and out.dtype == np.uint8
    st.stylize(f)
    assert st.state.frames == 2
    st.stylize(255 - f)                          # a scene cut
    assert st.state.frames == 1
    bank.cycle()
    st.stylize(255 - f)                          # a style switch
    assert st.state.frames == 1
    bank.select(0)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        st.stylize(f.astype(np.float32))


def test_pipeline_runs_and_closes_everything(stylizer_parts, portrait_bgr, tmp_path):
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    frames = [cv2.resize(np.roll(portrait_bgr, 3 * i, 1), (64, 80)) for i in range(4)]

    class ListSource(capture.FrameSource):
        closed = False

        def __iter__(self):
            for i, f in enumerate(frames):
                yield f, i * 33.0

        def close(self):
            ListSource.closed = True

    sink = output.FolderSink(tmp_path / "o")
    st = Stylizer(StylizerConfig(size=(64, 0)), enc, dec, bank)
    stats = Pipeline(ListSource(), segment.WholeFrameSegmenter(), st, [sink], max_frames=3, progress=False).run()
    assert stats["frames"] == 3 and ListSource.closed
    assert len(list((tmp_path / "o").glob("*.png"))) == 3
    for k in ("decode", "segment", "encoder", "reconstruct", "decoder", "output"):
        assert k in stats["ms"]


# ---------------------------------------------------------------- hotkeys, style switching, warm start

class CountingEncoder(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc, self.calls, self.layer = enc, 0, enc.layer

    def forward(self, x, **kw):
        self.calls += 1
        return self.enc(x, **kw)


@pytest.fixture
def live(stylizer_parts, tmp_path):
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    bank.select(0)
    counting = CountingEncoder(enc)
    st = Stylizer(StylizerConfig(mode="adain", strength=0.5, size=(64, 0)), counting, dec, bank)
    return Pipeline(capture.FrameSource(), segment.WholeFrameSegmenter(), st, [], snapshot_dir=tmp_path,
                    progress=False), counting


class ResetCountingSegmenter(segment.WholeFrameSegmenter):
    resets = 0

    def reset(self):
        self.resets += 1
        super().reset()


def test_each_hotkey_does_what_it_says(live, portrait_bgr, tmp_path):
    pipe, _ = live
    st = pipe.stylizer
    pipe.segmenter = ResetCountingSegmenter()
    f = cv2.resize(portrait_bgr, (64, 72))
    assert pipe.handle_key(ord("n"), f) and st.bank.index == 1
    assert pipe.handle_key(ord("p"), f) and st.bank.index == 0
    pipe.handle_key(ord("+"), f)
    assert st.config.strength == pytest.approx(0.6)
    pipe.handle_key(ord("-"), f)
    pipe.handle_key(ord("-"), f)
    assert st.config.strength == pytest.approx(0.4)
    pipe.handle_key(ord("m"), f)
    assert st.config.mode == "wct"
    pipe.handle_key(ord("m"), f)
    pipe.handle_key(ord("m"), f)
    assert st.config.mode == "linear"
    pipe.handle_key(ord("c"), f)
    assert st.config.keep_colors
    pipe.handle_key(ord(" "), f)
    assert pipe.bypass
    st.stylize(f)                                   # some temporal state, then effect back on: reset
    assert st.state.frames > 0
    pipe.handle_key(ord(" "), f)
    assert not pipe.bypass and st.state.frames == 0 and st._last_small is None
    pipe.handle_key(ord(" "), f)
    st.stylize(f)
    st.stylize(f)                                   # r: the temporal state and the segmenter's, reset
    assert st.state.frames == 2 and st.state.content is not None and pipe.segmenter.resets == 0
    assert pipe.handle_key(ord("r"), f)
    assert st.state.frames == 0 and st.state.content is None and st._last_small is None
    assert pipe.segmenter.resets == 1
    pipe.handle_key(ord("s"), f)
    snaps = list(tmp_path.glob("stylecam_*.png"))
    assert len(snaps) == 1 and np.array_equal(cv2.imread(str(snaps[0])), f)
    assert pipe.handle_key(ord("q"), f) is False
    assert pipe.handle_key(27, f) is False


def test_snapshots_never_overwrite_each_other_and_a_failed_one_is_a_warning(live, portrait_bgr, tmp_path, caplog):
    """Two presses of s within a second used to give one file (named to the second); a snapshot that
    cannot be written ended the whole live session (exit 1)."""
    pipe, _ = live
    f = cv2.resize(portrait_bgr, (64, 72))
    for _ in range(3):
        assert pipe.handle_key(ord("s"), f)
    assert len(list(tmp_path.glob("stylecam_*.png"))) == 3
    pipe.snapshot_dir = tmp_path / "a_file.txt"
    pipe.snapshot_dir.write_text("x")                     # a file where the folder should be
    with caplog.at_level("WARNING"):
        assert pipe.handle_key(ord("s"), f) is True        # the session goes on
    assert "snapshot not saved" in caplog.text


def test_live_recording_plays_at_the_capture_pace_and_keeps_its_aspect(live, portrait_bgr, tmp_path, caplog):
    """A camera's frames stylized at 2 a second were written one each into a 30 fps file, which then
    played 15x too fast; each is now written until the next one's capture time, so the file lasts as
    long as the capture. Frames of a new size (a camera reconnecting at another resolution) are
    letterboxed into the file's first size, said once, instead of squashed."""
    pipe, _ = live
    pipe.bypass = True                                     # the frames as sent: each one recognisable
    levels = [40, 90, 140, 200]
    frames = [np.full((48, 64, 3), v, np.uint8) for v in levels[:3]] + [np.full((64, 48, 3), levels[3], np.uint8)]

    class Camera(capture.FrameSource):
        is_live = True

        def __iter__(self):
            for i, f in enumerate(frames):                 # 2 stylized frames a second, as capture times
                yield f, 1000.0 + 500.0 * i

    def read_back(path):
        cap, got = cv2.VideoCapture(str(path)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                return got
            got.append(frame)

    sink = output.VideoFileSink(tmp_path / "rec.avi", fps=10.0)
    pipe.source, pipe.sinks = Camera(), [sink]
    with caplog.at_level("WARNING"):
        assert pipe.run()["frames"] == 4
    got = read_back(tmp_path / "rec.avi")
    assert len(got) == 16                  # slots 0..15 at 10 fps over 1.5 s: real time, not 0.4 s
    # each frame from its own capture time until the next one's: slots 0-4, 5-9, 10-14, then the last once
    centre = [int(g[20:28, 28:36].mean()) for g in got]
    assert [min(levels, key=lambda v: abs(v - c)) for c in centre] == [40] * 5 + [90] * 5 + [140] * 5 + [200]
    assert got[0].shape[:2] == (48, 64) and "letterboxed" in caplog.text
    last = got[-1].astype(int)
    assert last[:, :8].max() < 30 and last[:, -8:].max() < 30       # black bars beside the upright frame
    # a pause longer than MAX_GAP_S is shortened to it, and the frames after it follow on
    sink = output.VideoFileSink(tmp_path / "pause.avi", fps=10.0)
    sink.MAX_GAP_S = 0.3
    for f, t in zip(frames[:3], (0.0, 5000.0, 5100.0)):
        sink.send(f, t)
    sink.close()
    assert sink.frames == 3 + 1 + 1
    # a file's frames (no capture pace) are written once each, as before
    sink2 = output.VideoFileSink(tmp_path / "file.avi", fps=10.0)
    for _ in range(3):
        sink2.send(f)
    sink2.close()
    assert sink2.frames == 3


def test_space_bypass_passes_frames_through(live, portrait_bgr):
    pipe, _ = live
    frames = [cv2.resize(portrait_bgr, (64, 72))] * 2

    class Src(capture.FrameSource):
        def __iter__(self):
            for f in frames:
                yield f, 0.0

    class Keep(output.FrameSink):
        got = []

        def send(self, frame):
            self.got.append(frame)

    pipe.source, pipe.sinks, pipe.bypass = Src(), [Keep()], True
    pipe.run()
    assert all(np.array_equal(a, b) for a, b in zip(Keep.got, frames)) and len(Keep.got) == 2


def test_switching_styles_does_not_reencode_them(live, portrait_bgr):
    pipe, counting = live
    st = pipe.stylizer
    f = cv2.resize(portrait_bgr, (64, 72))
    st.stylize(f)
    before = counting.calls
    for _ in range(4):
        st.bank.cycle()
        st.stylize(f)
    assert counting.calls - before == 4          # one encoder pass per frame, none per style switch


def _warping_error(outs, affines, ignore):
    """Lai et al. 2018 warping error with exact flow: O_{t-1} warped into frame t by the known affine
    motion, compared where both frames see the scene and no distractor is near."""
    errs = []
    for t in range(1, len(outs)):
        A0 = np.vstack([affines[t - 1], [0, 0, 1]])
        A1 = np.vstack([affines[t], [0, 0, 1]])
        rel = (A1 @ np.linalg.inv(A0))[:2]                  # frame t-1 coords -> frame t coords
        h, w = outs[t].shape[:2]
        warped = cv2.warpAffine(outs[t - 1].astype(np.float32), rel, (w, h), flags=cv2.INTER_LINEAR)
        valid = cv2.warpAffine(np.ones((h, w), np.float32), rel, (w, h), flags=cv2.INTER_NEAREST) > 0.5
        valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~ignore[t] & ~ignore[t - 1]
        errs.append(float(((outs[t].astype(np.float32) - warped) ** 2).mean(-1)[valid].mean()))
    return float(np.mean(errs))


def test_warm_start_reduces_frame_to_frame_change_on_known_motion(stylizer_parts, portrait_bgr):
    """The demo clip's known affine motion, with bright 'sparkles' popping up at random places (a
    stand-in for anything that briefly changes a region's statistics). With the temporal state
    (smoothed statistics, warm start) the rest of the frame changes less than without it.  By how much
    depends on the decoder (11 % with session 20's, 4 % with session 22's), so only the direction is
    asserted; that the state is carried at all is checked exactly below
    (test_stylizer_carries_the_smoothed_statistics_from_frame_to_frame)."""
    import json
    from realtime.cli import DEMO_CLIP
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    bank.select(0)
    motion = json.loads((DEMO_CLIP.parent / "demo_clip_motion.json").read_text())["affine_2x3"]
    frames = [f for f, _ in capture.VideoFileSource(DEMO_CLIP)][:10]
    rng = np.random.default_rng(0)
    scale = 0.25                                     # 120 x 90 processing, to stay fast on CPU
    S = np.diag([scale, scale, 1.0])
    affines = [(S @ np.vstack([np.array(m), [0, 0, 1]]))[:2] for m in motion[:10]]
    small, ignore = [], []
    for f in frames:
        f = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        mask = np.zeros(f.shape[:2], np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, f.shape[0] - 16), rng.integers(0, f.shape[1] - 16)
            f[y:y + 16, x:x + 16] = 255
            mask[max(0, y - 12):y + 28, max(0, x - 12):x + 28] = 1
        small.append(f)
        ignore.append(mask.astype(bool))

    def run(momentum):
        st = Stylizer(StylizerConfig(mode="adain", momentum=momentum, scene_cut=1e9), enc, dec, bank)
        return [st.stylize(f) for f in small]

    warm, cold = _warping_error(run(0.8), affines, ignore), _warping_error(run(0.0), affines, ignore)
    print(f"warping error: warm {warm:.1f}, cold {cold:.1f}")
    assert warm < cold, (warm, cold)


def test_stylizer_carries_the_smoothed_statistics_from_frame_to_frame(stylizer_parts, portrait_bgr):
    """momentum 0.5: after frames A and B the content statistics the stylizer keeps are half A's and half
    B's (mean and variance of the encoder's features, computed here), and B's output is the decoder applied
    to the reconstruction with those statistics, not with B's own (a cold start's)."""
    from realtime import reconstruct as R
    from realtime.images import bgr_to_tensor, tensor_to_bgr
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    bank.select(0)
    a = cv2.resize(portrait_bgr, (96, 112))
    b = cv2.convertScaleAbs(np.roll(a, 9, axis=1), alpha=0.7, beta=40)      # moved, paler: other statistics
    fa, fb = (enc(bgr_to_tensor(x)) for x in (a, b))

    def mean_var(f):
        f = f[0].flatten(1).double()
        return f.mean(1), f.var(1, unbiased=False)

    (ma, va), (mb, vb) = mean_var(fa), mean_var(fb)
    cfg = StylizerConfig(mode="adain", momentum=0.5, scene_cut=1e9)
    st = Stylizer(cfg, enc, dec, bank)
    st.stylize(a)
    torch.testing.assert_close(st.state.content.mean[0].double(), ma, atol=1e-4, rtol=1e-4)
    out_b = st.stylize(b)
    assert st.state.frames == 2
    torch.testing.assert_close(st.state.content.mean[0].double(), 0.5 * ma + 0.5 * mb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(st.state.content.var[0].double(), 0.5 * va + 0.5 * vb, atol=1e-3, rtol=1e-4)
    assert (mb - ma).abs().max() > 0.1                        # A's share does move the statistics
    # B's output: reconstructed with the state of A's statistics, decoded
    seeded = R.ReconState(momentum=0.5)
    seeded.content = R.RegionStats(torch.tensor([float(fa[0, 0].numel())]), ma[None].float(), va[None].float())
    with torch.no_grad():
        want = tensor_to_bgr(dec(R.reconstruct(fb, None, bank.current.stats, "adain", 1.0, state=seeded,
                                               floor=0.0))[..., :112, :96])
    assert np.abs(out_b.astype(int) - want.astype(int)).max() <= 1
    cold = Stylizer(dataclasses.replace(cfg, momentum=0.0), enc, dec, bank).stylize(b)
    assert np.abs(out_b.astype(int) - cold.astype(int)).mean() > 1.0


def test_atomic_path_publishes_on_success_and_leaves_nothing_on_failure(tmp_path):
    from realtime.images import atomic_path
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "d" / "x.bin") as t:
            t.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not list((tmp_path / "d").iterdir())
    with atomic_path(tmp_path / "d" / "x.bin") as t:
        t.write_bytes(b"whole")
        assert not (tmp_path / "d" / "x.bin").exists()
    assert [f.name for f in (tmp_path / "d").iterdir()] == ["x.bin"]
    assert (tmp_path / "d" / "x.bin").read_bytes() == b"whole"


def test_outputs_get_ordinary_permissions(tmp_path):
    import os
    from realtime.images import write_image
    mask = os.umask(0o022)
    try:
        p = write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        s = output.VideoFileSink(tmp_path / "v.avi", 5)
        s.send(np.zeros((16, 16, 3), np.uint8))
        s.close()
    finally:
        os.umask(mask)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "v.avi").stat().st_mode & 0o777) == oct(0o644)


def test_decoder_only_ever_sees_non_negative_features(stylizer_parts, portrait_bgr):
    """A strong linear mean shift makes some reconstructed features negative; the stylizer clamps
    them (they come from a ReLU), and the decoder receives none below zero."""
    from realtime import reconstruct as R
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    seen = []

    class Recording(torch.nn.Module):
        layer = dec.layer

        def forward(self, x):
            seen.append(float(x.min()))
            return dec(x)

    f = cv2.resize(portrait_bgr, (96, 112))
    feat = enc(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)
    shifted = R.reconstruct(feat[0], None, bank.current.stats, "linear", 1.0)
    assert float(shifted.min()) < 0                    # the shift alone does go below zero
    Stylizer(StylizerConfig(mode="linear", size=(96, 0)), enc, Recording(), bank).stylize(f)
    assert seen and min(seen) >= 0


def test_stylizer_with_deflicker_on_a_still_clip_matches_without(stylizer_parts, portrait_bgr):
    """On a clip that does not move, the deflickered stylisation equals the plain one (the blend of
    equal images is the image; nothing drifts over frames); the config refuses strength 1."""
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    f = cv2.resize(portrait_bgr, (96, 112))
    plain = Stylizer(StylizerConfig(size=(96, 0)), enc, dec, bank)
    smooth = Stylizer(StylizerConfig(size=(96, 0), deflicker=0.6), enc, dec, bank)
    for _ in range(4):
        a, b = plain.stylize(f), smooth.stylize(f)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="deflicker"):
        StylizerConfig(deflicker=1.0)


@pytest.fixture(scope="module")
def toy_networks():
    """A stand-in encoder (4x average pooling, a random 3x3 convolution to 8 channels, ReLU) and decoder
    (4x upsampling, a random convolution back to 3 channels, sigmoid) with a style bank of the demo
    painting: the stylizer's own logic at a small fraction of the real networks' cost."""
    import torch.nn.functional as F
    from realtime.cli import DEMO_STYLE
    from realtime.style import StyleBank
    g = torch.Generator().manual_seed(0)

    class Toy(torch.nn.Module):
        layer = "relu3_1"

        def __init__(self, cin, cout, up):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(cout, cin, 3, 3, generator=g) * 0.3, requires_grad=False)
            self.up = up

        def forward(self, x):
            if self.up:
                return torch.sigmoid(F.conv2d(F.interpolate(x, scale_factor=4, mode="nearest"), self.w, padding=1))
            return torch.relu(F.conv2d(F.avg_pool2d(x, 4, ceil_mode=True), self.w, padding=1))

    enc, dec = Toy(3, 8, False).eval(), Toy(8, 3, True).eval()
    bank = StyleBank(enc, "none", max_side=128)
    bank.add(DEMO_STYLE)
    return enc, dec, bank


def _moving_portrait(portrait_bgr, n, hw=(112, 96), step=3):
    """n frames of the portrait at hw (H, W), panning ``step`` px a frame: motion the deflicker's flow follows."""
    h, w = hw
    big = cv2.resize(portrait_bgr, (w + step * n, h + step * n // 2), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(big[(step * t) // 2:(step * t) // 2 + h, step * t:step * t + w]) for t in range(n)]


def test_stylizer_applies_the_deflicker_and_survives_a_resolution_change(toy_networks, portrait_bgr, monkeypatch):
    """A moving clip through a stylizer with the deflicker on (the default for video), whose camera
    reconnects at another resolution: frames of 96x112, then 120x80, then 96x112 again.

    * Every output has its input's size.
    * The first stretch is, exactly, the OpenCV deflicker run over the plain stylizer's frames: the first
      frame untouched, the later ones blended, not left as they were (a stylizer that skipped the filter
      passed the still-clip test above).
    * The first frame of each new size is the plain stylizer's (the filter starts afresh), and the later ones
      are a fresh filter's of that size (a filter or stylizer keeping the first size's state broke on the
      second frame of the new size).
    * Each new processing size is checked against the free memory once, when it appears.

    What is tested is the stylizer's handling of sizes and of the filter, not the networks: small random
    ones (toy_networks) keep it fast."""
    from realtime import stylizer as S
    from realtime.deflicker import Deflicker
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = toy_networks
    checked = []
    monkeypatch.setattr(S, "check_processing_size", lambda h, w, device: checked.append((h, w)))
    stretches = [_moving_portrait(portrait_bgr, 3, (112, 96)), _moving_portrait(portrait_bgr, 2, (80, 120)),
                 _moving_portrait(portrait_bgr, 2, (112, 96))]
    plain = Stylizer(StylizerConfig(size=None, deflicker=0.0), enc, dec, bank)
    smooth = Stylizer(StylizerConfig(size=None, deflicker=0.5), enc, dec, bank)
    for k, frames in enumerate(stretches):
        ref = Deflicker(0.5)                      # a fresh filter for each stretch of one size
        for i, f in enumerate(frames):
            p, s = plain.stylize(f), smooth.stylize(f)
            assert s.shape == f.shape and s.dtype == np.uint8
            want = ref(f, p)
            if i == 0:
                assert np.array_equal(s, p), (k, i)
                continue
            assert np.abs(s.astype(int) - p.astype(int)).mean() > 0.5, (k, i)        # blended
            if k == 0:
                assert np.array_equal(s, want), i
            else:     # to rounding: OpenCV's DIS object keeps buffers between calls (tests/test_deflicker.py)
                assert np.abs(s.astype(int) - want.astype(int)).mean() < 0.5, (k, i)
    assert checked == [(112, 96)] * 2 + [(80, 120)] * 2 + [(112, 96)] * 2          # by each of the two stylizers


def test_keep_colors_output_keeps_the_frames_chroma(stylizer_parts, portrait_bgr):
    """keep_colors: the stylized frame's luminance with the input's colours. The stylizer's output is
    images.keep_colors of its plain output (exactly, at the frame's own size): its chroma (CrCb) is the
    input's but where YCrCb has no such colour (rounding, clipping at a few pixels), its Y the plain one's;
    without it the chroma is the painting's."""
    from realtime.stylizer import Stylizer, StylizerConfig
    enc, dec, bank = stylizer_parts
    bank.select(0)
    f = cv2.resize(portrait_bgr, (96, 112))
    plain = Stylizer(StylizerConfig(), enc, dec, bank).stylize(f)
    kept = Stylizer(StylizerConfig(keep_colors=True), enc, dec, bank).stylize(f)
    assert np.array_equal(kept, keep_colors(plain, f))
    ycc = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2YCrCb).astype(int)    # noqa: E731
    chroma = np.abs(ycc(kept)[..., 1:] - ycc(f)[..., 1:])
    luma = np.abs(ycc(kept)[..., 0] - ycc(plain)[..., 0])
    assert np.percentile(chroma, 99) <= 3 and chroma.mean() < 0.5, (np.percentile(chroma, 99), chroma.mean())
    assert np.percentile(luma, 99) <= 2 and luma.mean() < 0.5
    assert np.abs(ycc(plain)[..., 1:] - ycc(f)[..., 1:]).mean() > 3          # the style did change the colours


# ---------------------------------------------------------------- virtual camera

class FakeCamera:
    """pyvirtualcam.Camera's surface, recording what the sink does with it."""
    opened: list = []

    def __init__(self, width, height, fps, fmt=None):
        if width == 13:                                   # a size "no device" accepts
            raise RuntimeError("'v4l2loopback' backend: no v4l2 loopback device found")
        self.args, self.frames, self.sleeps, self.closed = (width, height, fps, fmt), [], 0, False
        self.width, self.height, self.device = width, height, "/dev/video9"
        FakeCamera.opened.append(self)

    def send(self, frame):
        self.frames.append(frame)

    def sleep_until_next_frame(self):
        self.sleeps += 1

    def close(self):
        self.closed = True


def test_virtual_camera_sink(monkeypatch):
    """--vcam's sink: a clear install hint without pyvirtualcam; with it, the camera opened once at the
    first frame's size in BGR, every frame sent and paced, closed at the end; no device is a RuntimeError
    that says how to make one."""
    import sys
    import types
    from realtime.output import VirtualCamSink
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)            # not installed
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[vcam\]"'):
        VirtualCamSink(30.0)
    fake = types.SimpleNamespace(Camera=FakeCamera, PixelFormat=types.SimpleNamespace(BGR="BGR"))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    FakeCamera.opened = []
    sink = VirtualCamSink(25.0)
    frames = [np.full((24, 32, 3), i, np.uint8) for i in range(3)]
    for f in frames:
        sink.send(f)
    sink.close()
    (cam,) = FakeCamera.opened
    assert cam.args == (32, 24, 25.0, "BGR") and cam.sleeps == 3 and cam.closed
    assert [f[0, 0, 0] for f in cam.frames] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="no virtual camera device.*v4l2loopback|OBS"):
        VirtualCamSink(30.0).send(np.zeros((10, 13, 3), np.uint8))


def test_window_sink(monkeypatch):
    """The preview window: without a display, a RuntimeError that says what to do instead; with one, each
    frame shown and the key pressed after it kept for the hotkeys (OpenCV's GUI calls faked here)."""
    import realtime.output as O
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if os.name != "nt":
        with pytest.raises(RuntimeError, match="use --no-window with --out or --vcam"):
            O.WindowSink()
    monkeypatch.setenv("DISPLAY", ":0")
    shown, keys = [], iter([-1, ord("n") | 0x100, -1])    # waitKey may set high bits: masked to 0-255
    visible = iter([1.0, 1.0, 0.0])                        # the third time, the close button was clicked
    monkeypatch.setattr(O.cv2, "getWindowProperty", lambda title, prop: next(visible))
    monkeypatch.setattr(O.cv2, "namedWindow", lambda title, flags: shown.append(("open", title)))
    monkeypatch.setattr(O.cv2, "imshow", lambda title, frame: shown.append(("show", int(frame[0, 0, 0]))))
    monkeypatch.setattr(O.cv2, "waitKey", lambda ms: next(keys))
    monkeypatch.setattr(O.cv2, "destroyWindow", lambda title: shown.append(("close", title)))
    w = O.WindowSink("t")
    w.send(np.full((4, 4, 3), 7, np.uint8))
    assert w.last_key == 255                                # -1 & 0xFF: no key (the pipeline ignores it)
    w.send(np.full((4, 4, 3), 8, np.uint8))
    assert w.last_key == ord("n")
    w.send(np.full((4, 4, 3), 9, np.uint8))
    assert w.last_key == ord("q")                           # closed with its button: quit, as q
    w.close()
    assert shown == [("open", "t"), ("show", 7), ("show", 8), ("show", 9), ("close", "t")]
    # an OpenCV whose GUI cannot tell (GTK answers -1 always) never quits by it
    monkeypatch.setattr(O.cv2, "getWindowProperty", lambda title, prop: -1.0)
    monkeypatch.setattr(O.cv2, "waitKey", lambda ms: -1)
    g = O.WindowSink("gtk")
    for _ in range(3):
        g.send(np.zeros((4, 4, 3), np.uint8))
        assert g.last_key == 255
    # macOS draws windows with Cocoa: no DISPLAY needed there
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setattr(sys, "platform", "darwin")
    O.WindowSink("mac").close()


def test_window_overlay_is_drawn_on_a_copy():
    """The preview's FPS / style / per-stage overlay: drawn in the top-left corner of a copy (the frames
    written to files and the virtual camera stay clean)."""
    from realtime.pipeline import draw_overlay
    frame = np.full((120, 320, 3), 90, np.uint8)
    out = draw_overlay(frame, 12.3, {"encoder": 40.0, "decoder": 20.0}, "demo_style", "adain", 0.8)
    assert out.shape == frame.shape and (frame == 90).all()
    changed = np.argwhere((out != 90).any(axis=2))
    assert len(changed) > 100 and changed[:, 0].max() < 70 and changed[:, 1].min() < 20
