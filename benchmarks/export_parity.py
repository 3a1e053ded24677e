"""How closely the exported ONNX graphs compute what PyTorch does: the README's export parity figures.

    python benchmarks/export_parity.py [--layer relu3_1] [--precisions fp32,fp16] [--what encoder,decoder]
                                       [--json out.json]

Each network is exported as ``stylecam export`` does it (export.onnx_export.export_onnx, dynamic shapes,
into a temporary folder), run with ONNX Runtime on the CPU, and compared with PyTorch on the export's own
parity inputs (the bundled demo frame and painting at 240x320 and an odd 157x211:
export.onnx_export.parity_inputs, compare_outputs). Reported per graph: the worst relative error
(max |diff| / max |torch|) against the export's tolerance (export.onnx_export.TOLERANCE).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import check_outputs, machine_info, write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", default="relu3_1", choices=["relu3_1", "relu4_1"], help="(default %(default)s)")
    p.add_argument("--precisions", default="fp32,fp16", help="comma-separated: fp32, fp16 (default %(default)s)")
    p.add_argument("--what", default="encoder,decoder", help="comma-separated: encoder, decoder (default %(default)s)")
    p.add_argument("--json", default=None, help="write the results and the machine's record here")
    a = p.parse_args(argv)
    precisions = [x for x in a.precisions.split(",") if x]
    whats = [x for x in a.what.split(",") if x]
    if not precisions or set(precisions) - {"fp32", "fp16"}:
        p.error(f"--precisions takes fp32, fp16; got {a.precisions!r}")
    if not whats or set(whats) - {"encoder", "decoder"}:
        p.error(f"--what takes encoder, decoder; got {a.what!r}")
    check_outputs(p, a.json)
    from engines.base import load_engine
    from export.onnx_export import TOLERANCE, build_network, compare_outputs, export_onnx, parity_inputs
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for prec in precisions:
            for what in whats:
                module = build_network(what, a.layer)
                path = export_onnx(module, Path(work) / f"{what}_{prec}.onnx", what=what, layer=a.layer,
                                   fp16=prec == "fp16")
                per_input = compare_outputs(module, load_engine(path, device="cpu"), parity_inputs(what, a.layer))
                worst = max(r["rel"] for r in per_input)
                rows.append({"network": what, "precision": prec, "worst_rel": worst, "tolerance": TOLERANCE[prec],
                             "inputs": per_input})
                print(f"{a.layer} {what:8s} {prec}: worst relative error {worst:.2e} (tolerance {TOLERANCE[prec]:g})")
    if a.json:
        write_json(a.json, {"machine": machine_info(argv, __file__), "layer": a.layer, "results": rows})
    return 0 if all(r["worst_rel"] <= r["tolerance"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
