"""The TensorRT and ONNX-Runtime-on-CUDA code paths, driven on the CPU where they can be: a stand-in
``tensorrt`` module records what the builder is asked and plays the runtime, so the TensorRT 10 / 11
branches, the engine file's loading and refusals, the export command's parity inputs against its own
profile, the live command's profile, the cache's keys and the CLI's device checks run here without
TensorRT or a GPU. What only a GPU with TensorRT can show (the engines' numbers, streams, data
pointers) is in test_engines.py's GPU tests."""
import argparse
import contextlib
import enum
import json
import sys
import types

import numpy as np
import pytest
import torch

from engines.trt_engine import read_engine_file, write_engine_file


def fake_tensorrt(version="10.3.0", fp16_flag=True, strongly_typed_flag=True, engine_factory=None):
    """A stand-in ``tensorrt`` module of ``version``: its builder records calls in ``trt.calls`` and
    serializes the ONNX bytes it parsed; its runtime deserializes with ``engine_factory(blob)``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    rec = trt.calls.append

    class Logger:
        WARNING = 2

        def __init__(self, level):
            rec(("logger",))

    class BuilderFlag:
        TF32 = "TF32"
    if fp16_flag:
        BuilderFlag.FP16 = "FP16"

    members = {"EXPLICIT_BATCH": 0}
    if strongly_typed_flag:
        members["STRONGLY_TYPED"] = 1
    NF = enum.IntEnum("NetworkDefinitionCreationFlag", members)

    class Input:
        name = "in"

    class Network:
        def get_input(self, i):
            return Input()

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            rec(("parse",))
            self.data = data
            trt.parsed = data
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            rec(("set_shape", name, lo, opt, hi))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            rec(("pool", pool, size))

        def set_flag(self, f):
            rec(("set_flag", f))

        def clear_flag(self, f):
            rec(("clear_flag", f))

        def add_optimization_profile(self, p):
            rec(("add_profile",))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return trt.parsed

    class Runtime:
        def __init__(self, logger):
            rec(("runtime", id(logger)))

        def deserialize_cuda_engine(self, blob):
            return engine_factory(blob) if engine_factory else None

    trt.Logger, trt.BuilderFlag, trt.NetworkDefinitionCreationFlag = Logger, BuilderFlag, NF
    trt.OnnxParser, trt.Builder, trt.Runtime = Parser, Builder, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", BF16="BF16", INT8="INT8")
    return trt


class FakeEngine:
    """What TrtEngine reads from a deserialized engine: two named tensors, their dtypes, one profile."""

    def __init__(self, in_dtype="FLOAT", out_dtype="FLOAT", profile=((1, 3, 16, 16), (1, 3, 64, 64), (1, 3, 96, 96))):
        self.names = ["image", "features"]
        self.dtypes = {"image": in_dtype, "features": out_dtype}
        self.profile = profile
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "image" else "OUTPUT"

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_profile_shape(self, name, i):
        return self.profile

    def create_execution_context(self):
        return object()


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch as on a machine with one CUDA device (for the code that asks; nothing runs on it)."""
    import engines.trt_engine as te
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU 80GB")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", lambda d=None: types.SimpleNamespace(cuda_stream=7))
    monkeypatch.setattr(te, "_LOGGER", None)


def install(monkeypatch, trt):
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture(scope="module")
def onnx_graphs(tmp_path_factory):
    """The relu3_1 decoder exported as an FP32 and an FP16 ONNX graph (the builder's inputs)."""
    from export.onnx_export import build_network, export_onnx
    d = tmp_path_factory.mktemp("graphs")
    m = build_network("decoder", "relu3_1")
    return (export_onnx(m, d / "d32.onnx", what="decoder", layer="relu3_1"),
            export_onnx(m, d / "d16.onnx", what="decoder", layer="relu3_1", fp16=True))


PROFILE = {"min": (1, 256, 4, 4), "opt": (1, 256, 60, 80), "max": (1, 256, 120, 160)}


@pytest.mark.parametrize("version,fp16_flag,st_flag", [("10.3.0", True, True), ("11.0.0", False, True),
                                                       ("11.0.0", False, False)])
def test_build_engine_tensorrt_10_and_11(tmp_path, monkeypatch, fake_gpu, onnx_graphs, version, fp16_flag, st_flag):
    """TensorRT 10: a plain network, BuilderFlag.FP16 for --fp16. TensorRT 11 (no FP16 flag): a strongly
    typed network whose precision is the graph's -- an FP16 engine only from the FP16 graph, an FP32 graph
    with fp16 refused before it is parsed. Both: TF32 off, the profile handed over as given, the header
    naming versions, GPU and precision."""
    from export.trt_build import build_engine
    g32, g16 = onnx_graphs
    trt = install(monkeypatch, fake_tensorrt(version, fp16_flag, st_flag))
    st = version.startswith("11")
    for graph, fp16 in ((g32, False), (g16, True), (g16, False)):
        trt.calls.clear()
        out = build_engine(graph, tmp_path / "e.engine", fp16=fp16, profile=PROFILE)
        header, blob = read_engine_file(out)
        assert blob == graph.read_bytes()
        created = [c[1] for c in trt.calls if c[0] == "create_network"]
        assert created == [(1 << 1) if st and st_flag else 0]
        assert (("set_flag", "FP16") in trt.calls) == (fp16 and not st)
        assert ("clear_flag", "TF32") in trt.calls
        assert ("set_shape", "in", PROFILE["min"], PROFILE["opt"], PROFILE["max"]) in trt.calls
        graph_prec = "fp16" if graph == g16 else "fp32"
        assert header["precision"] == (graph_prec if st else "fp16" if fp16 else "fp32")
        assert header["strongly_typed"] == st and header["tensorrt"] == version
        assert header["gpu"] == "Fake GPU 80GB" and header["profile"]["max"] == list(PROFILE["max"])
    trt.calls.clear()
    if st:
        with pytest.raises(ValueError, match="FP16 ONNX graphs only"):
            build_engine(g32, tmp_path / "f.engine", fp16=True, profile=PROFILE)
        assert ("parse",) not in trt.calls                       # refused before minutes of parsing
    else:
        build_engine(g32, tmp_path / "f.engine", fp16=True, profile=PROFILE)
        assert read_engine_file(tmp_path / "f.engine")[0]["precision"] == "fp16"
    with pytest.raises(ValueError, match="profile"):
        build_engine(g32, tmp_path / "g.engine", fp16=False, profile=None)


def test_one_tensorrt_logger_for_builders_and_runtimes(tmp_path, monkeypatch, fake_gpu, onnx_graphs):
    """TensorRT keeps a single logger pointer: every builder and runtime of the process gets the same one
    (each its own made TensorRT warn, and could leave it pointing at a freed one)."""
    from engines.trt_engine import TrtEngine
    from export.trt_build import build_engine
    trt = install(monkeypatch, fake_tensorrt(engine_factory=lambda b: FakeEngine()))
    build_engine(onnx_graphs[0], tmp_path / "e.engine", fp16=False, profile=PROFILE)
    TrtEngine(tmp_path / "e.engine", device="cuda:0")
    TrtEngine(tmp_path / "e.engine", device="cuda:0")
    assert [c for c in trt.calls if c[0] == "logger"] == [("logger",)]
    assert len({c[1] for c in trt.calls if c[0] == "runtime"}) == 1


def test_trt_engine_reads_io_dtypes_profile_and_refuses_what_it_cannot_run(tmp_path, monkeypatch, fake_gpu):
    from engines import base
    from engines.trt_engine import TrtEngine
    write_engine_file(tmp_path / "e.engine", {"in_channels": 3, "precision": "fp16", "tensorrt": "10.1.0",
                                              "gpu": "Other GPU"}, b"blob")
    install(monkeypatch, fake_tensorrt(engine_factory=lambda b: FakeEngine("FLOAT", "HALF")))
    e = base.load_engine(tmp_path / "e.engine", device="cuda:0")
    assert isinstance(e, TrtEngine)
    assert (e.input_name, e.output_name) == ("image", "features")
    assert (e.in_dtype, e.out_dtype) == (torch.float32, torch.float16)
    assert (e.min_shape, e.max_shape) == ((1, 3, 16, 16), (1, 3, 96, 96))
    e.check(torch.zeros(1, 3, 16, 96))                                   # inside: no error
    for shape in ((1, 3, 8, 32), (1, 3, 97, 32)):
        with pytest.raises(ValueError, match=r"takes 16x16 to 96x96 \(HxW\)"):
            e.check(torch.zeros(shape))
    with pytest.raises(ValueError, match="expects N x 3"):
        e.check(torch.zeros(1, 4, 32, 32))
    install(monkeypatch, fake_tensorrt(engine_factory=lambda b: FakeEngine("BF16", "BF16")))
    assert TrtEngine(tmp_path / "e.engine", device="cuda:0").out_dtype == torch.bfloat16
    install(monkeypatch, fake_tensorrt(engine_factory=lambda b: FakeEngine("INT8", "FLOAT")))
    with pytest.raises(ValueError, match="input is INT8"):
        TrtEngine(tmp_path / "e.engine", device="cuda:0")
    # an engine this TensorRT cannot load: both versions and both GPUs named, and the remedy
    install(monkeypatch, fake_tensorrt("10.7.0", engine_factory=lambda b: None))
    with pytest.raises(RuntimeError) as err:
        TrtEngine(tmp_path / "e.engine", device="cuda:0")
    msg = str(err.value)
    assert all(s in msg for s in ("10.7.0", "10.1.0", "Fake GPU 80GB", "Other GPU", "stylecam export --format engine"))
    with pytest.raises(ValueError, match="CUDA device"):
        TrtEngine(tmp_path / "e.engine", device="cpu")
    # only stylecam's own engine files are registered (a bare .plan has no header to read)
    assert ".plan" not in base.REGISTRY and ".trt" not in base.REGISTRY


def test_tensorrt_that_does_not_load_is_a_clear_error(monkeypatch):
    """A TensorRT wheel whose libraries do not load (OSError) is the same one-line error as none at all
    (the export command had reported it as 'cannot write to OUT')."""
    from engines.trt_engine import tensorrt_or_error

    class BrokenInstall:                 # finds tensorrt, whose import then fails to load its library
        def find_spec(self, name, path=None, target=None):
            if name == "tensorrt":
                raise OSError("libnvinfer.so.10: cannot open shared object file")
            return None
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenInstall(), *sys.meta_path])
    with pytest.raises(RuntimeError, match="does not load.*libnvinfer.*--format onnx"):
        tensorrt_or_error("use --format onnx")


def test_export_command_checks_engine_parity_inside_its_own_default_profile(tmp_path, monkeypatch, capsys, fake_gpu):
    """`stylecam export --format engine` with its default profile: the parity inputs lie inside the
    profile (its odd 157x211 input lay outside the old 240x320 minimum, so the README's command always
    failed), and an engine whose parity cannot be shown is not left behind. The engine is played by ONNX
    Runtime on the ONNX graph it was built from, refusing what the engine's profile refuses."""
    from engines import base
    from engines.ort_engine import OrtEngine
    import export.__main__ as em
    install(monkeypatch, fake_tensorrt("10.3.0"))
    seen = []

    class EngineStandIn(OrtEngine):
        def __init__(self, path, device="cpu", **kw):
            header, _ = read_engine_file(path)
            super().__init__(path.with_suffix(".onnx"), device="cpu")
            self.lo, self.hi = header["profile"]["min"], header["profile"]["max"]

        def __call__(self, x):
            assert all(lo <= s <= hi for s, lo, hi in zip(x.shape, self.lo, self.hi)), (x.shape, self.lo, self.hi)
            seen.append(tuple(x.shape))
            return super().__call__(x)
    monkeypatch.setattr(base, "load_engine", lambda path, device="cpu", **kw: EngineStandIn(path, device))
    assert em.main(["--what", "decoder", "--format", "engine", "--out", str(tmp_path)]) == 0
    assert "parity OK" in capsys.readouterr().out
    assert (tmp_path / "decoder_relu3_1_fp32.engine").exists()
    # default profile 32x32 .. 1920x1920 (any orientation), tuned for 720x1280: parity at 32x32 and an odd size
    from engines.vgg import feature_size
    small, odd = (1, 256, *feature_size(32, 32, "relu3_1")), (1, 256, *feature_size(377, 657, "relu3_1"))
    assert seen == [small, odd, small, odd]                    # the demo frame and painting at each size
    # a parity run that fails part-way removes the engine it was checking
    monkeypatch.setattr(base, "load_engine", lambda *a, **k: (_ for _ in ()).throw(ValueError("engine broke")))
    assert em.main(["--what", "decoder", "--format", "engine", "--out", str(tmp_path / "b")]) == 2
    assert not list((tmp_path / "b").glob("*.engine"))


@pytest.mark.parametrize("size,paintings_and_frames", [
    (None, [(512, 288), (288, 512), (16, 16), (360, 640), (640, 360), (480, 640), (512, 37)]),
    ((1920, 1080), [(1080, 1920), (1920, 1080), (512, 288)]),
    ((256, 0), [(256, 144), (144, 256), (512, 512)]),
])
def test_live_tensorrt_profile_takes_every_size_the_pipeline_makes(size, paintings_and_frames):
    """The live command's engines take portrait and landscape paintings (at most 512 a side) and frames
    (the processing size: --size, else 640 at most), down to 16 pixels: the export's old default profile,
    240x320 to 1080x1920, refused a 9:16 painting (512x288 after resizing), portrait frames and small
    stills, with an error naming options the live command does not have."""
    from export.__main__ import image_profile
    from realtime.cli import live_engine_sizes
    ns = live_engine_sizes(size)
    for hw in paintings_and_frames:
        assert all(lo <= s <= hi for s, lo, hi in zip(hw, ns.min, ns.max)), (hw, ns)
    assert all(lo <= o <= hi for lo, o, hi in zip(ns.min, ns.opt, ns.max))
    prof = image_profile("decoder", "relu4_1", ns)
    assert min(prof["min"][2:]) >= 2                                   # relu4_1's features of a 16-pixel image


def test_cached_engine_keys_follow_version_gpu_precision_and_profile(tmp_path, monkeypatch, fake_gpu, hed_weights):
    """One cached engine per TensorRT version, GPU, precision and profile; the ONNX graph they are built
    from is shared; a cached engine that no longer loads is built again, once."""
    import engines.cache as cache
    import export.trt_build as tb
    from engines.weights import build_encoder
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    built = []

    def fake_build(onnx_path, out_path, *, fp16, profile, device=None, **kw):
        built.append((onnx_path.name, out_path.name))
        write_engine_file(out_path, {"precision": "fp16" if fp16 else "fp32"}, b"x")
        return out_path
    monkeypatch.setattr(tb, "build_engine", fake_build)
    ns = argparse.Namespace(min=(16, 16), opt=(240, 320), max=(512, 512))
    from export.__main__ import image_profile
    prof = image_profile("encoder", "relu3_1", ns)
    enc = build_encoder("relu3_1", hed_weights)
    paths = set()
    for version, gpu, fp16, p in (("10.3.0", "A", False, prof), ("10.4.0", "A", False, prof),
                                  ("10.3.0", "B", False, prof), ("10.3.0", "A", True, prof),
                                  ("10.3.0", "A", False, image_profile("encoder", "relu3_1", argparse.Namespace(
                                      min=(16, 16), opt=(240, 320), max=(640, 640))))):
        install(monkeypatch, fake_tensorrt(version))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, g=gpu: g)
        paths.add(cache.cached_export(enc, "encoder", "relu3_1", "tensorrt", fp16, p, weights_key="w"))
    assert len(paths) == 5 and len(built) == 5
    assert len({b[0] for b in built}) == 2                      # an FP32 and an FP16 ONNX graph, shared
    install(monkeypatch, fake_tensorrt("10.3.0"))
    again = cache.cached_export(enc, "encoder", "relu3_1", "tensorrt", False, prof, weights_key="w")
    assert again in paths and len(built) == 5                   # reused, not rebuilt
    with pytest.raises(ValueError, match="profile"):
        cache.cached_export(enc, "encoder", "relu3_1", "tensorrt", False, None, weights_key="w")


def test_cli_refuses_tensorrt_on_the_cpu(monkeypatch, capsys):
    """--backend tensorrt --device cpu: the engines would run on the GPU and hand CUDA tensors to a CPU
    stylizer (a device error at the first frame); refused up front."""
    from realtime.cli import main
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["--demo", "--no-window", "--backend", "tensorrt", "--device", "cpu", "--max-frames", "1"]) == 2
    assert "--backend tensorrt runs the networks on the GPU" in capsys.readouterr().err


def test_onnx_runtime_outputs_become_torch_tensors_without_numpy():
    """ONNX Runtime's OrtValue to torch through DLPack (``__dlpack__``; ``to_dlpack`` in older releases),
    through NumPy only where neither exists: the CUDA path went through NumPy always (a GPU -> host -> GPU
    copy of every output), as onnxruntime had dropped ``to_dlpack``."""
    import onnxruntime as ort
    from engines.ort_engine import ortvalue_to_torch
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    v = ort.OrtValue.ortvalue_from_numpy(a)
    assert hasattr(v, "__dlpack__")
    t = ortvalue_to_torch(v, torch.device("cpu"))
    assert torch.equal(t, torch.from_numpy(a))
    assert t.data_ptr() == v.data_ptr()                          # the same memory: no copy

    class NumpyOnly:
        def numpy(self):
            return a
    assert torch.equal(ortvalue_to_torch(NumpyOnly(), torch.device("cpu")), torch.from_numpy(a))


def test_onnx_runtime_on_cuda_asks_for_the_cuda_provider_only(monkeypatch, tmp_path):
    """--backend onnx on CUDA: ONNX Runtime's CUDA provider on the engine's device (not its TensorRT
    provider, which without TensorRT prints an error banner and builds each session twice, and with it
    builds engines again at every start), and a clear error where onnxruntime has no CUDA provider."""
    import onnxruntime as ort
    from engines.ort_engine import OrtEngine
    from export.onnx_export import build_network, export_onnx
    g = export_onnx(build_network("decoder", "relu3_1"), tmp_path / "d.onnx", what="decoder", layer="relu3_1")
    asked = {}

    class Session:
        def __init__(self, path, so, providers):
            asked["providers"] = providers
            raise RuntimeError("stop here")
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="stop here"):
        OrtEngine(g, device="cuda:1")
    assert asked["providers"] == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="replace it with onnxruntime-gpu"):
        OrtEngine(g, device="cuda:0")


def test_cuda_toolkit_choice(tmp_path, monkeypatch):
    """The kernel's toolkit: one of torch's own CUDA major version before another (torch refuses a
    mismatch, so the kernel fell back although a matching toolkit was installed); versions compared as
    numbers (cuda-12.10 is newer than cuda-12.9)."""
    from realtime import kernels

    def toolkit(name, version):
        d = tmp_path / name
        (d / "bin").mkdir(parents=True)
        (d / "bin" / "nvcc").write_text("")
        (d / "lib64").mkdir()
        (d / "lib64" / "libcudart.so").write_text("")
        (d / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": version}}))
        return d
    old, new = toolkit("cuda-a", "12.4.1"), toolkit("cuda-b", "99.1.0")
    assert kernels.toolkit_version(str(old)) == "12.4.1"
    monkeypatch.setenv("CUDA_HOME", str(old))
    monkeypatch.setenv("CUDA_PATH", str(new))
    monkeypatch.setattr(torch.version, "cuda", "99.0")
    assert kernels.cuda_home() == str(new.resolve())          # the matching one, though named second
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert kernels.cuda_home() == str(old.resolve())
    assert sorted(["/usr/local/cuda-12.9", "/usr/local/cuda-12.10", "/usr/local/cuda-11.8"],
                  key=kernels._version_key) == ["/usr/local/cuda-11.8", "/usr/local/cuda-12.9", "/usr/local/cuda-12.10"]


def test_kernel_arch_list_without_a_gpu_takes_the_users(monkeypatch):
    from realtime import kernels
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5;8.6")
    assert kernels.arch_list() == "7.5;8.6"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert kernels.arch_list() == "8.0;9.0"
    # with GPUs: every visible device's architecture, whatever the environment says
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: [(9, 0), (8, 6), (9, 0)][i])
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "5.2 6.0 6.1 7.0 7.5 8.0 8.6 9.0+PTX")
    assert kernels.arch_list() == "8.6;9.0"


@pytest.mark.gpu
def test_a_network_on_the_gpu_exports_to_onnx(tmp_path, hed_weights):
    """The live command's --backend onnx/tensorrt export the networks it has put on the GPU: exported from
    a CPU copy (traced with a CPU example, a CUDA module failed with a device mismatch), the graph equal
    to the module, the module left on the GPU."""
    import onnxruntime as ort
    from engines.weights import build_encoder
    from export.onnx_export import export_onnx
    enc = build_encoder("relu3_1", hed_weights, torch.device("cuda"))
    p = export_onnx(enc, tmp_path / "e.onnx", what="encoder", layer="relu3_1")
    assert next(enc.parameters()).is_cuda
    x = torch.rand(1, 3, 48, 64)
    y = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():        # the same weights on the CPU (cuDNN's TF32 would blur the comparison)
        ref = build_encoder("relu3_1", hed_weights)(x)
    torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_a_cached_engine_that_no_longer_loads_is_built_again_once(tmp_path, monkeypatch, fake_gpu, hed_weights):
    """The live command's engines: a cached engine (built by an earlier run) that this TensorRT cannot load
    any more is built again, once; an engine that fails to load right after this run built it is an error,
    not a loop of rebuilds."""
    import export.trt_build as tb
    from engines.decoder import default_decoder_path, load_decoder
    from engines.weights import build_encoder
    from realtime.cli import make_engines
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    built = []

    def fake_build(onnx_path, out_path, *, fp16, profile, device=None, **kw):
        built.append(out_path.name)
        write_engine_file(out_path, {"precision": "fp32", "tensorrt": "10.3.0", "gpu": "Fake GPU 80GB"}, b"x")
        return out_path
    monkeypatch.setattr(tb, "build_engine", fake_build)
    enc = build_encoder("relu3_1", hed_weights)
    dec_path = default_decoder_path("relu3_1")
    dec = load_decoder(dec_path)
    args = lambda: argparse.Namespace(backend="tensorrt", fp16=False, layer="relu3_1", size=None, int8=False)  # noqa: E731
    dev = torch.device("cuda", 0)
    install(monkeypatch, fake_tensorrt(engine_factory=lambda b: FakeEngine()))
    make_engines(args(), enc, dec, dec_path, hed_weights, dev)
    assert len(built) == 2                                          # encoder and decoder, once
    make_engines(args(), enc, dec, dec_path, hed_weights, dev)
    assert len(built) == 2                                          # reused
    loads = []

    def first_fails(blob):
        loads.append(1)
        return None if len(loads) == 1 else FakeEngine()
    install(monkeypatch, fake_tensorrt(engine_factory=first_fails))
    make_engines(args(), enc, dec, dec_path, hed_weights, dev)
    assert len(built) == 3 and len(loads) == 3                      # the encoder's built again, then both loaded
    for p in tmp_path.joinpath("engines").glob("*.engine"):
        p.unlink()
    install(monkeypatch, fake_tensorrt(engine_factory=lambda b: None))
    with pytest.raises(RuntimeError, match="could not load"):
        make_engines(args(), enc, dec, dec_path, hed_weights, dev)
    assert len(built) == 4                                          # built once, not again
