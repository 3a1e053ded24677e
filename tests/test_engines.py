"""Engines and export: ONNX parity on real images, the registry, the errors; GPU paths marked."""
import importlib.util
import json

import pytest
import torch

from engines import base
from engines.ort_engine import OrtEngine
from engines.torch_engine import TorchEngine
from engines.trt_engine import MAGIC, read_engine_file, write_engine_file
from export import fp16 as F16
from export.__main__ import main as export_main
from export.onnx_export import TOLERANCE, build_network, compare_outputs, export_onnx, parity_inputs

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def exported(tmp_path_factory, hed_weights):
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for what in ("encoder", "decoder"):
        for layer in ("relu3_1", "relu4_1"):
            m = build_network(what, layer)
            out[what, layer] = (m, export_onnx(m, d / f"{what}_{layer}.onnx", what=what, layer=layer))
    return out


@pytest.mark.parametrize("what", ["encoder", "decoder"])
@pytest.mark.parametrize("layer", ["relu3_1", "relu4_1"])
def test_onnx_runtime_matches_pytorch_on_real_images(exported, what, layer):
    import onnx
    m, path = exported[what, layer]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    meta = json.loads({p.key: p.value for p in model.metadata_props}["stylecam"])
    assert meta["network"] == what and meta["layer"] == layer and meta["precision"] == "fp32"
    engine = base.load_engine(path)
    assert isinstance(engine, OrtEngine)
    inputs = parity_inputs(what, layer)                        # 240x320 and an odd 157x211
    assert {tuple(x.shape[-2:]) for x in inputs} >= ({(240, 320), (157, 211)} if what == "encoder" else set())
    rows = compare_outputs(m, engine, inputs)
    assert len(rows) == 4
    assert max(r["rel"] for r in rows) <= TOLERANCE["fp32"]


def test_compare_outputs_detects_a_wrong_model(exported):
    m, path = exported["decoder", "relu3_1"]
    wrong = build_network("decoder", "relu3_1")
    with torch.no_grad():
        wrong.net[0].weight.mul_(1.05)
    rows = compare_outputs(wrong, base.load_engine(path), parity_inputs("decoder", "relu3_1")[:1])
    assert rows[0]["rel"] > TOLERANCE["fp32"]


def test_fp16_onnx_graph_keeps_fp32_io_and_stays_within_tolerance(tmp_path, hed_weights):
    m = build_network("decoder", "relu3_1")
    p = export_onnx(m, tmp_path / "d16.onnx", what="decoder", layer="relu3_1", fp16=True)
    import onnx
    g = onnx.load(str(p)).graph
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in g.initializer)
    rows = compare_outputs(m, base.load_engine(p), parity_inputs("decoder", "relu3_1"))
    assert max(r["rel"] for r in rows) <= TOLERANCE["fp16"]


def test_registry_dispatch_and_errors(exported, tmp_path):
    assert {"torch", ".pt", "onnx", ".onnx", "tensorrt", ".engine"} <= set(base.REGISTRY)
    dec = build_network("decoder", "relu3_1")
    te = base.load_engine("torch", module=dec)
    assert isinstance(te, TorchEngine)
    with pytest.raises(ValueError, match="N x 256 x H x W"):
        te(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no engine for"):
        base.load_engine(tmp_path / "model.xyz")
    with pytest.raises(FileNotFoundError):
        base.load_engine(tmp_path / "none.onnx")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        base.load_engine(exported["encoder", "relu3_1"][1])(torch.rand(1, 4, 32, 32))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            TorchEngine(module=dec, precision="fp16")
    static = export_onnx(dec, tmp_path / "static.onnx", what="decoder", layer="relu3_1", dynamic=False,
                         example_hw=(64, 80))
    eng = base.load_engine(static)
    assert eng(torch.rand(1, 256, 16, 20)).shape == (1, 3, 64, 80)
    with pytest.raises(ValueError, match="--dynamic"):
        eng(torch.rand(1, 256, 17, 20))


@pytest.mark.parametrize("what", ["encoder", "decoder"])
@pytest.mark.parametrize("layer", ["relu3_1", "relu4_1"])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_graphs_stay_within_their_tolerance_of_pytorch(exported, tmp_path, what, layer, reduce_range):
    """export/int8.py against the FP32 PyTorch networks (the references) on the parity images: within
    TOLERANCE['int8'], but not equal (really quantized), the metadata saying so; relu3_1's decoder's
    convolutions at the features' resolution, and only those, left FP32; relu4_1's decoder whole
    with 8-bit weights, like relu3_1's with 7-bit ones."""
    import onnx
    from export.int8 import WHOLE_DECODER_LAYERS, quantize
    m, fp32 = exported[what, layer]
    enc = exported["encoder", layer][0]
    q = quantize(fp32, tmp_path / "q.onnx", encoder=enc, reduce_range=reduce_range)
    graph = onnx.load(str(q)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    eng = base.load_engine(q)
    assert eng.precision == "int8" and eng.meta["layer"] == layer and eng.meta["network"] == what
    assert eng.meta["int8"]["reduce_range"] is reduce_range
    kept = eng.meta["int8"]["fp32_convs"]
    assert (layer in WHOLE_DECODER_LAYERS) is (layer == "relu4_1")     # as benchmarks/int8.py measured
    if what == "encoder" or (layer in WHOLE_DECODER_LAYERS and not reduce_range):
        assert kept == []
    else:
        # the convolutions before the first upsampling, by the FP32 graph's own order
        order = [n.op_type for n in onnx.load(str(fp32)).graph.node if n.op_type in ("Conv", "Resize")]
        assert 0 < len(kept) == order.index("Resize") < order.count("Conv")
    # a kept convolution reads a plain (not dequantized) weight, every other one a dequantized one
    deq_out = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert all(convs[k].input[1] not in deq_out for k in kept)
    assert sum(c.input[1] in deq_out for c in convs.values()) == len(convs) - len(kept)
    rows = compare_outputs(m, eng, parity_inputs(what, layer))
    worst = max(r["rel"] for r in rows)
    assert 1e-4 < worst <= TOLERANCE["int8"], worst
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.onnx"]       # no temporaries left


def test_int8_weights_are_7_bit_only_on_x86_without_vnni(monkeypatch):
    import platform
    import export.int8 as I
    for machine, vnni, seven in (("x86_64", False, True), ("x86_64", True, False), ("AMD64", False, True),
                                 ("aarch64", False, False), ("arm64", False, False)):
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(I, "cpu_has_vnni", lambda v=vnni: v)
        assert I.default_reduce_range() is seven, (machine, vnni)


def test_int8_takes_only_fp32_stylecam_graphs(exported, tmp_path):
    from export.int8 import quantize
    q = quantize(exported["encoder", "relu3_1"][1], tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="not an FP32 stylecam"):
        quantize(q, tmp_path / "qq.onnx")
    with pytest.raises(ValueError, match="give the encoder"):
        quantize(exported["decoder", "relu3_1"][1], tmp_path / "qd.onnx")
    assert [f.name for f in tmp_path.iterdir()] == ["q.onnx"]
    dec_fp32, enc = exported["decoder", "relu3_1"][1], exported["encoder", "relu3_1"][0]
    whole = quantize(dec_fp32, tmp_path / "w.onnx", encoder=enc, whole=True)
    assert base.load_engine(whole).meta["int8"]["fp32_convs"] == []
    # and the other way round: relu4_1's decoder, whole by default, with its first stage kept FP32
    dec4, enc4 = exported["decoder", "relu4_1"][1], exported["encoder", "relu4_1"][0]
    part = quantize(dec4, tmp_path / "p.onnx", encoder=enc4, whole=False)
    assert len(base.load_engine(part).meta["int8"]["fp32_convs"]) > 0
    for bad in (["--format", "engine"], ["--fp16"]):
        with pytest.raises(SystemExit):
            export_main(["--int8", "--out", str(tmp_path / "x")] + bad)
    assert not (tmp_path / "x").exists()


def test_export_cli_writes_int8_graphs(tmp_path):
    assert export_main(["--what", "all", "--int8", "--out", str(tmp_path)]) == 0
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["decoder_relu3_1_int8.onnx", "encoder_relu3_1_int8.onnx"]
    assert all(base.load_engine(tmp_path / n).precision == "int8" for n in names)
    # a graph of fixed size is calibrated at its own size (an odd one here: the decoder's 40 x 53 features)
    st = tmp_path / "static"
    assert export_main(["--what", "all", "--int8", "--static", "--opt", "157x211", "--out", str(st)]) == 0
    eng = base.load_engine(st / "decoder_relu3_1_int8_static.onnx")
    assert eng.static_hw == (40, 53) and eng(torch.rand(1, 256, 40, 53)).shape == (1, 3, 160, 212)


def test_exports_get_ordinary_permissions(tmp_path):
    # written through mkstemp (0600) and renamed: they must end up with the umask's permissions
    import os
    mask = os.umask(0o022)
    try:
        p = export_onnx(build_network("decoder", "relu3_1"), tmp_path / "d.onnx", what="decoder", layer="relu3_1")
        write_engine_file(tmp_path / "x.engine", {"layer": "relu3_1"}, b"blob")
    finally:
        os.umask(mask)
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "x.engine").stat().st_mode & 0o777) == oct(0o644)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d.onnx", "x.engine"]      # no temporary left


def test_engine_file_header_roundtrip(tmp_path):
    p = tmp_path / "x.engine"
    write_engine_file(p, {"layer": "relu3_1", "precision": "fp16", "profile": {"min": [1, 3, 8, 8]}}, b"\x00blob")
    h, blob = read_engine_file(p)
    assert h["layer"] == "relu3_1" and blob == b"\x00blob" and p.read_bytes().startswith(MAGIC)
    (tmp_path / "bad.engine").write_bytes(b"plain tensorrt bytes")
    with pytest.raises(ValueError, match="header"):
        read_engine_file(tmp_path / "bad.engine")


def test_export_profile_sizes_must_grow_and_say_height_first(tmp_path, capsys):
    # 1920x1080 read as the width-first --size would be a portrait 1920-high profile, narrower than --opt
    with pytest.raises(SystemExit) as e:
        export_main(["--format", "engine", "--max", "1920x1080", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must grow in width" in err and "HEIGHTxWIDTH" in err
    with pytest.raises(SystemExit):
        export_main(["--format", "engine", "--min", "800x320", "--out", str(tmp_path)])
    assert "must grow in height" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(HAS_TRT and torch.cuda.is_available(), reason="TensorRT and a GPU are present")
def test_engine_export_without_tensorrt_is_a_clear_error(tmp_path, capsys):
    assert export_main(["--format", "engine", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err or "GPU" in err
    assert "--format onnx" in err and "--backend" not in err       # export's own option, not the CLI's
    assert not list(tmp_path.iterdir())                       # nothing exported before the check


def test_export_to_an_unwritable_place_is_one_line_not_a_traceback(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert export_main(["--what", "encoder", "--out", str(a_file / "exp")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"stylecam export: error: cannot write to {a_file / 'exp'}: ")


def test_export_cli_writes_and_verifies(tmp_path, capsys):
    assert export_main(["--what", "decoder", "--layer", "relu3_1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parity OK" in out and "| 1x256x40x53 |" in out
    assert (tmp_path / "decoder_relu3_1_fp32.onnx").exists()


def test_export_names_and_describes_which_decoder(tmp_path, capsys, caplog):
    """The wide decoder exported beside the default one gets its own file (it used to overwrite the
    default's), each graph's metadata names its decoder file and digest; a static graph records the image
    size it was made for; exporting only the encoder does not look for a decoder."""
    import json
    import onnx
    from engines.weights import sha256_file, weights_dir
    assert export_main(["--what", "decoder", "--out", str(tmp_path)]) == 0
    assert export_main(["--what", "decoder", "--decoder", "wide", "--out", str(tmp_path)]) == 0
    assert "ignored here" not in caplog.text
    assert export_main(["--what", "encoder", "--layer", "relu4_1", "--decoder", "wide", "--static",
                        "--opt", "64x96", "--max", "128x128", "--out", str(tmp_path)]) == 0
    assert "--min/--max shape a TensorRT engine's profile" in caplog.text      # said, not silently ignored
    capsys.readouterr()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["decoder_relu3_1_fp32.onnx", "decoder_relu3_1_wide_fp32.onnx",
                                                          "encoder_relu4_1_fp32_static.onnx"]

    def meta(name):
        return json.loads({p.key: p.value for p in onnx.load(str(tmp_path / name)).metadata_props}["stylecam"])
    for name, src in (("decoder_relu3_1_fp32.onnx", "decoder_relu3_1.pt"),
                      ("decoder_relu3_1_wide_fp32.onnx", "decoder_relu3_1_wide.pt")):
        m = meta(name)
        assert m["decoder_file"] == src and m["decoder_sha256"] == sha256_file(weights_dir() / src)
    assert meta("encoder_relu4_1_fp32_static.onnx")["image_hw"] == [64, 96]
    assert "image_hw" not in meta("decoder_relu3_1_fp32.onnx")
    assert export_main(["--what", "decoder", "--decoder", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "is a folder" in capsys.readouterr().err


def _record_with(**peaks):
    """The real record (its encoder id and files' sha256) with some peaks replaced."""
    rec = dict(F16.recorded_range())
    rec.update(peaks)
    return lambda: rec


def test_fp16_export_is_refused_when_activations_would_overflow(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(F16, "recorded_range", _record_with(decoder_relu3_1=30000.0))
    assert export_main(["--what", "decoder", "--fp16", "--out", str(tmp_path)]) == 2
    assert "refusing FP16" in capsys.readouterr().err
    assert F16.fp16_safe(1000.0) and not F16.fp16_safe(20000.0)


def test_fp16_check_uses_the_record_of_the_decoder_file_exported(tmp_path, capsys, monkeypatch):
    """The recorded peak is looked up by the decoder file's name (the wide decoder has its own), and another
    decoder under that name is measured instead of trusting the shipped file's record."""
    from engines.decoder import load_decoder, save_decoder
    from engines.weights import ENCODER_ID_HED, weights_dir
    monkeypatch.setattr(F16, "recorded_range", _record_with(decoder_relu3_1=10.0, decoder_relu3_1_wide=30000.0))
    wide = weights_dir() / "decoder_relu3_1_wide.pt"
    assert export_main(["--what", "decoder", "--fp16", "--decoder", str(wide), "--out", str(tmp_path)]) == 2
    assert "refusing FP16" in capsys.readouterr().err
    mine = tmp_path / "mine" / "decoder_relu3_1_wide.pt"
    mine.parent.mkdir()
    dec = load_decoder(wide)
    with torch.no_grad():
        dec.net[-1].bias.add_(0.01)                                 # a decoder of its own, by the same name
    save_decoder(dec, mine, encoder_id=ENCODER_ID_HED)
    assert export_main(["--what", "decoder", "--fp16", "--decoder", str(mine), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "decoder_relu3_1_wide_fp16.onnx").exists()        # named after its file


def test_recorded_activation_range_is_fp16_safe():
    rec = F16.recorded_range()
    assert rec, "export/activation_range.json is missing: run python -m export.fp16 DIR"
    for k in ("encoder_relu3_1", "encoder_relu4_1", "decoder_relu3_1", "decoder_relu3_1_wide", "decoder_relu4_1"):
        assert F16.fp16_safe(rec[k]), (k, rec[k])


def test_the_fp16_record_is_of_the_shipped_networks_and_used_only_for_them(tmp_path, monkeypatch, hed_weights):
    """export/activation_range.json names what it measured (the encoder's weights id, each decoder file's
    sha256): it must be of the networks shipped now (retrain a decoder and this fails until the record is
    measured again), and check_fp16 takes a figure from it only for that very network -- another decoder
    under the same file name, or an encoder of other weights (ImageNet VGG's activations are ~10x HED's),
    is measured instead."""
    import shutil
    from engines.decoder import load_decoder, save_decoder, shipped_decoder_files
    from engines.weights import ENCODER_ID_HED, build_encoder, sha256_file
    rec = F16.recorded_range()
    assert rec["encoder_id"] == ENCODER_ID_HED
    for layer in ("relu3_1", "relu4_1"):
        for p in (p for p in shipped_decoder_files(layer) if p.exists()):
            assert rec["sha256"][p.stem] == sha256_file(p), f"{p.name} changed: python -m export.fp16 DIR"
    measured = []
    real = F16.peak_activations
    monkeypatch.setattr(F16, "peak_activations", lambda m, xs: measured.append(1) or real(m, list(xs)[:1]))
    shipped = shipped_decoder_files("relu3_1")[0]
    assert F16.check_fp16(load_decoder(shipped), "decoder", "relu3_1", shipped) == rec[shipped.stem]
    assert F16.check_fp16(build_encoder("relu3_1", hed_weights), "encoder", "relu3_1") == rec["encoder_relu3_1"]
    assert not measured                                             # both from the record
    copy = tmp_path / shipped.name                                  # the same name, the same network: the record
    shutil.copy(shipped, copy)
    assert F16.check_fp16(load_decoder(copy), "decoder", "relu3_1", copy) == rec[shipped.stem] and not measured
    dec = load_decoder(shipped)
    with torch.no_grad():
        dec.net[0].weight.mul_(3.0)                                 # another decoder under the same name
    save_decoder(dec, copy, encoder_id=ENCODER_ID_HED)
    other = F16.check_fp16(dec, "decoder", "relu3_1", copy)
    assert measured == [1] and other != rec[shipped.stem]
    enc = build_encoder("relu3_1", hed_weights)
    enc.encoder_id = "torchvision-vgg16"
    F16.check_fp16(enc, "encoder", "relu3_1")
    assert measured == [1, 1]


# ---------------------------------------------------------------- GPU (skipped, with the reason, without CUDA)

@pytest.mark.gpu
@pytest.mark.parametrize("compile_, graph, decoder", [(False, False, "small"), (False, True, "small"),
                                                     (True, False, "small"), (False, False, "wide"),
                                                     (False, True, "wide")])
def test_fp16_torch_engine_on_cuda_matches_fp32_cpu(compile_, graph, decoder, hed_weights):
    """Both relu3_1 decoders (the small one the default everywhere, the wide one by name) in FP16 on CUDA against FP32 on the CPU."""
    from engines.decoder import resolve_decoder
    path = resolve_decoder(decoder, "relu3_1")
    dec = build_network("decoder", "relu3_1", decoder_path=path)
    x = parity_inputs("decoder", "relu3_1")[0]
    ref = dec(x)
    eng = TorchEngine(module=build_network("decoder", "relu3_1", decoder_path=path), device="cuda", precision="fp16",
                      channels_last=True, compile=compile_, cuda_graph=graph)
    eng.warmup(tuple(x.shape))
    y = eng(x.cuda()).cpu()
    assert ((y - ref).abs().max() / ref.abs().max()) <= TOLERANCE["fp16"]


@pytest.mark.gpu
def test_cuda_graph_engine_keeps_the_last_shapes_and_recaptures_a_dropped_one():
    """TorchEngine(cuda_graph=True), the CUDA default since session 11: a shape runs eagerly the first
    time and is captured the second; one graph per shape, the least recently used dropped beyond
    MAX_GRAPHS; every call gives the eager engine's output, a dropped shape is captured again, and a
    reused shape moves to the back of the queue."""
    dec = build_network("decoder", "relu3_1")
    eager = TorchEngine(module=dec, device="cuda")
    eng = TorchEngine(module=build_network("decoder", "relu3_1"), device="cuda", cuda_graph=True)
    n = TorchEngine.MAX_GRAPHS
    shapes = [(1, 256, 8 + 2 * i, 12) for i in range(n + 2)]
    xs = {s: torch.rand(s, device="cuda") for s in shapes}

    def check(s):
        torch.testing.assert_close(eng(xs[s]), eager(xs[s]), rtol=1e-3, atol=1e-3)

    check(shapes[0])
    assert not eng._graphs                                                # once: not captured
    for s in shapes:
        check(s)
        check(s)
    assert list(eng._graphs) == shapes[-n:]                               # the first two dropped
    check(shapes[-n])                                                     # reuse the oldest kept
    assert list(eng._graphs)[-1] == shapes[-n]
    check(shapes[0])                                                      # dropped: eager again,
    assert shapes[0] not in eng._graphs
    check(shapes[0])                                                      # then captured again
    assert len(eng._graphs) == n and shapes[0] in eng._graphs
    assert shapes[-n + 1] not in eng._graphs                              # now the least recently used


def test_engine_profiles_follow_the_graph():
    """An engine's min/opt/max shapes: images for the encoder, ceil-mode features for the decoder; a
    --static graph (one size) gets --opt's shape for all three, whatever --min and --max say."""
    import argparse
    from export.__main__ import image_profile
    a = argparse.Namespace(min=(64, 64), opt=(240, 320), max=(481, 640), dynamic=True)
    assert image_profile("encoder", "relu3_1", a) == {"min": (1, 3, 64, 64), "opt": (1, 3, 240, 320),
                                                      "max": (1, 3, 481, 640)}
    assert image_profile("decoder", "relu3_1", a)["max"] == (1, 256, 121, 160)
    a.dynamic = False
    assert set(image_profile("decoder", "relu4_1", a).values()) == {(1, 512, 30, 40)}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed on this machine")
def test_tensorrt_engine_parity(tmp_path):
    from export.__main__ import image_profile
    from export.trt_build import build_engine
    import argparse
    m = build_network("decoder", "relu3_1")
    onnx_path = export_onnx(m, tmp_path / "d.onnx", what="decoder", layer="relu3_1", fp16=True)
    prof = image_profile("decoder", "relu3_1", argparse.Namespace(min=(64, 64), opt=(240, 320), max=(480, 640)))
    eng_path = build_engine(onnx_path, tmp_path / "d.engine", fp16=True, profile=prof)
    eng = base.load_engine(eng_path, device="cuda")
    rows = compare_outputs(m, eng, parity_inputs("decoder", "relu3_1"))
    assert max(r["rel"] for r in rows) <= TOLERANCE["fp16"]
    with pytest.raises(ValueError, match="profile"):
        eng(torch.rand(1, 256, 200, 200, device="cuda"))


def test_channels_last_torch_engine_matches_and_hands_back_nchw(hed_weights):
    """TorchEngine(channels_last=True) (fps.py --channels-last; on CUDA cuDNN's FP16 convolutions
    are NHWC) computes the same encoder features as the NCHW engine, and hands them back in FP32
    NCHW-contiguous, the layout the fused reconstruction op reads fastest."""
    from engines.weights import build_encoder
    enc = build_encoder("relu3_1", hed_weights)
    x = torch.rand(1, 3, 50, 66)
    ref = TorchEngine(module=enc)(x)
    y = TorchEngine(module=build_encoder("relu3_1", hed_weights), channels_last=True)(x)
    assert y.dtype == torch.float32 and y.is_contiguous()
    assert not TorchEngine(module=enc, channels_last=True).fn(x.contiguous(memory_format=torch.channels_last)) \
        .is_contiguous()                                    # the network itself did run in NHWC
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def _host_tensor_ops(module, x):
    """The ops of ``module(x)`` that make a tensor from host data (``torch.tensor(...)`` inside
    forward): each is a host-to-device copy on CUDA, which a CUDA graph capture refuses."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Record() as rec:
        module(x)
    assert rec.ops, "the recorder saw no ops at all"
    return [op for op in rec.ops if "lift_fresh" in op or "scalar_tensor" in op]


@pytest.mark.parametrize("what", ["encoder", "decoder"])
def test_networks_make_no_tensors_from_host_data_in_forward(what, hed_weights):
    """The CUDA-graph engines (fps.py --cuda-graph) capture these forwards: a constant built in
    forward was the H100's failure in session 9 (the encoder's input mean)."""
    m = build_network(what, "relu3_1")
    x = parity_inputs(what, "relu3_1")[0][:, :, :32, :32]
    assert _host_tensor_ops(m, x) == []


@pytest.mark.parametrize("convention", ["hed", "torchvision"])
def test_encoder_input_constants_are_buffers_that_follow_the_module(convention):
    from engines.vgg import InputConvention, VGGEncoder
    enc = VGGEncoder("relu1_1", convention=convention)
    assert "input_mean" not in enc.state_dict() and "input_std" not in enc.state_dict()
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(enc.convention.apply(x, enc.input_mean, enc.input_std),
                               InputConvention(convention).apply(x))
    half = enc.to(torch.float16)
    assert half.input_mean.dtype == torch.float16 and half.input_std.dtype == torch.float16
    with pytest.raises(ValueError, match="unknown input convention"):
        InputConvention("rgb")


def test_fp16_activation_record_is_measured_and_written_atomically(tmp_path, portrait_bgr, capsys):
    """python -m export.fp16: every network's peak activation on a folder of images, written whole to
    --out (no temporary left); a missing folder or an unwritable --out is refused before any work."""
    import json
    import cv2
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"{i}.png"), cv2.resize(portrait_bgr, (64 + 16 * i, 80)))
    out = tmp_path / "range.json"
    assert F16.main([str(d), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["images"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "range.json"]
    for key in ("encoder_relu3_1", "tap_relu3_1", "decoder_relu3_1", "decoder_relu3_1_wide", "encoder_relu4_1",
                "decoder_relu4_1"):
        assert 0 < rec[key] < F16.FP16_MAX, key
    assert rec["tap_relu3_1"] <= rec["encoder_relu3_1"]         # the tap is one of the encoder's outputs
    for bad in ([str(tmp_path / "none")], [str(d), "--out", str(out / "x.json")]):
        with pytest.raises(SystemExit):
            F16.main(bad)
    capsys.readouterr()


def _engines_to_check(exported, tmp_path):
    """(name, engine, module) for every engine this machine can run: PyTorch and ONNX Runtime on the CPU;
    on CUDA also PyTorch eager and CUDA-graph replay, ONNX Runtime where it has a CUDA provider, and
    TensorRT where it is installed."""
    import onnxruntime as ort
    m, path = exported["decoder", "relu3_1"]
    out = [("torch-cpu", TorchEngine(module=m), m), ("onnx-cpu", base.load_engine(path), m)]
    if torch.cuda.is_available():
        import copy
        mc = copy.deepcopy(m).cuda()
        out += [("torch-cuda", TorchEngine(module=mc, device="cuda"), m),
                ("torch-cuda-graph", TorchEngine(module=copy.deepcopy(m).cuda(), device="cuda", cuda_graph=True), m)]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            out.append(("onnx-cuda", base.load_engine(path, device="cuda"), m))
        if HAS_TRT:
            import argparse
            from export.__main__ import image_profile
            from export.trt_build import build_engine
            prof = image_profile("decoder", "relu3_1", argparse.Namespace(min=(32, 32), opt=(240, 320),
                                                                          max=(480, 640)))
            eng = build_engine(path, tmp_path / "d.engine", fp16=False, profile=prof)
            out.append(("tensorrt", base.load_engine(eng, device="cuda"), m))
    return out


def test_every_engine_hands_back_a_tensor_of_its_own(exported, tmp_path):
    """The Engine contract: each call returns a new tensor, which a later call of the same shape does not
    overwrite (a style's features are kept while frames run; the TensorRT engine handed back one buffer
    per shape, overwritten by the next call). Run over every engine available here."""
    g = torch.Generator().manual_seed(3)
    x1, x2 = (torch.rand(1, 256, 24, 32, generator=g) * 20 for _ in range(2))
    for name, eng, m in _engines_to_check(exported, tmp_path):
        dev = eng.device
        y1 = eng(x1.to(dev))
        keep = y1.clone()
        y2 = eng(x2.to(dev))
        assert y1.data_ptr() != y2.data_ptr(), name
        assert torch.equal(y1, keep), name                          # not overwritten by the second call
        with torch.no_grad():
            ref = m(x1)
        torch.testing.assert_close(y1.float().cpu(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))
