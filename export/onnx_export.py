"""Export the encoder and the decoder to ONNX, and check what was exported against PyTorch.

``export_onnx`` writes atomically, checks the model with ``onnx.checker``, makes height and
width dynamic, and records what the file is in its metadata (``stylecam`` JSON: network,
layer, input convention, precision, encoder id).  ``compare_outputs`` is the one parity
function the tests and the CLI share (idea from torch2trt's ``cross_validate``).
"""
from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from engines.vgg import feature_size
from realtime.images import atomic_path

log = logging.getLogger(__name__)

OPSET = 17
# relative error = max|ours - torch| / max|torch| over the output
# int8 (export/int8.py), measured on these inputs in session 24 for relu3_1 and relu4_1 with 8- and 7-bit
# weights: encoders 0.017-0.040, decoders 0.031-0.062 (the worst pixel; a broken graph is far beyond)
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}


class HalfInside(nn.Module):
    """FP16 network with FP32 inputs and outputs: the casts are part of the graph, so callers
    and the statistics between encoder and decoder stay FP32."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = copy.deepcopy(m).half()
        self.layer = getattr(m, "layer", None)
        self.in_channels = getattr(m, "in_channels", 3)

    def forward(self, x):
        return self.m(x.half()).float()


def build_network(what: str, layer: str, encoder_weights=None, decoder_path=None) -> nn.Module:
    """The PyTorch module for ``what`` ('encoder' or 'decoder') at ``layer``, eval mode, CPU."""
    from engines.decoder import load_decoder
    from engines.weights import build_encoder, load_encoder_weights, weights_dir
    ew = load_encoder_weights(encoder_weights)
    if what == "encoder":
        m = build_encoder(layer, ew)
        m.in_channels = 3
        m.meta = {"convention": "BGR [0,1] in (HED mean subtracted inside)", "encoder_id": ew.encoder_id}
        return m
    if what == "decoder":
        from engines.weights import sha256_file
        path = Path(decoder_path or weights_dir() / f"decoder_{layer}.pt")
        m = load_decoder(path, encoder_id=ew.encoder_id)
        if m.layer != layer:
            raise ValueError(f"{decoder_path} is a {m.layer} decoder, not {layer}")
        # which decoder this is (the half- and full-width ones export to graphs that look alike)
        m.meta = {"convention": "raw encoder features in, BGR [0,1] out", "encoder_id": ew.encoder_id,
                  "decoder_file": path.name, "decoder_sha256": sha256_file(path)}
        return m
    raise ValueError(f"what must be 'encoder' or 'decoder', got {what!r}")


class _Forward(nn.Module):
    """Plain forward (no out_size / taps keywords) for tracing."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


def export_onnx(module: nn.Module, path: str | Path, *, what: str, layer: str, fp16: bool = False,
                dynamic: bool = True, example_hw: tuple[int, int] = (64, 80), opset: int = OPSET) -> Path:
    import onnx
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c_in = getattr(module, "in_channels", 3)
    stride = 1 if what == "encoder" else {"relu3_1": 4, "relu4_1": 8}[layer]
    # a decoder's input is the features of an example_hw image: ceil-mode pooling, as the encoder's (a
    # floor here made --static decoders one cell short of what the encoder gives at odd sizes)
    h, w = example_hw if what == "encoder" else tuple(max(2, v) for v in feature_size(*example_hw, layer))
    if any(t.device.type != "cpu" for t in (*module.parameters(), *module.buffers())):
        # traced with a CPU example: a module on the GPU (the live command's, --backend tensorrt or onnx on
        # CUDA) is exported from a CPU copy (the graph holds no device)
        module = copy.deepcopy(module).cpu()
    net = HalfInside(module) if fp16 else module
    x = torch.rand(1, c_in, h, w) * (1.0 if what == "encoder" else 20.0)
    in_name, out_name = ("image", "features") if what == "encoder" else ("features", "image")
    axes = {in_name: {0: "n", 2: "h", 3: "w"}, out_name: {0: "n", 2: "oh", 3: "ow"}} if dynamic else None
    t = time.perf_counter()
    with atomic_path(path, ".onnx.tmp") as tmp:        # renamed with the umask's permissions at the end
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # tracer warnings about our own shape checks
            torch.onnx.export(_Forward(net).eval(), (x,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[in_name], output_names=[out_name], dynamic_axes=axes,
                              do_constant_folding=True)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        meta = dict(getattr(module, "meta", {}))
        meta.update({"network": what, "layer": layer, "precision": "fp16" if fp16 else "fp32", "dynamic": dynamic,
                     "in_channels": c_in, "stride": stride, "opset": opset, "torch": torch.__version__})
        if not dynamic:      # a graph of fixed size: the image size it was made for (its input is h x w)
            meta["image_hw"] = list(example_hw)
        entry = model.metadata_props.add()
        entry.key, entry.value = "stylecam", json.dumps(meta)
        onnx.save(model, str(tmp))
    log.info("exported %s %s to %s in %.1f s", what, layer, path, time.perf_counter() - t)
    return path


@torch.no_grad()
def compare_outputs(reference, engine, inputs: list[torch.Tensor]) -> list[dict]:
    """Run ``reference`` (PyTorch) and ``engine`` on each input; max and mean absolute error, and
    the relative error max|a-b| / max|a|, per input."""
    rows = []
    for x in inputs:
        a = reference(x).float().cpu()
        b = engine(x).float().cpu()
        if a.shape != b.shape:
            raise ValueError(f"output shapes differ for input {tuple(x.shape)}: {tuple(a.shape)} vs {tuple(b.shape)}")
        d = (a - b).abs()
        rows.append({"input": "x".join(map(str, x.shape)), "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                     "rel": float(d.max() / a.abs().max().clamp_min(1e-12))})
    return rows


def parity_inputs(what: str, layer: str, sizes=((240, 320), (157, 211))) -> list[torch.Tensor]:
    """Real images (the bundled demo frame and style) at two sizes, one odd; for the decoder,
    their encoder features."""
    import cv2
    from realtime.cli import DEMO_CLIP, DEMO_STYLE
    from realtime.capture import VideoFileSource
    from realtime.images import bgr_to_tensor, read_image
    frame = next(iter(VideoFileSource(DEMO_CLIP)))[0]
    imgs = [frame, read_image(DEMO_STYLE)]
    xs = [bgr_to_tensor(cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)) for im in imgs for (h, w) in sizes]
    if what == "encoder":
        return xs
    enc = build_network("encoder", layer)
    return [enc(x) for x in xs]
