"""Check an exported graph against the operators TensorRT's ONNX parser supports.

The list lives in ``trt_onnx_ops.txt`` next to this file (one operator per
line, ``#`` comments), taken from onnx-tensorrt's operator support table and
trimmed to operators supported without caveats that matter here. The export
must stay inside it so the same ONNX builds a TensorRT engine on the Jetson.
"""

from __future__ import annotations

from pathlib import Path

from ..rig.foundation.errors import ModelError

OPS_FILE = Path(__file__).resolve().parent / "trt_onnx_ops.txt"
MIN_OPSET = 17


def supported_ops(path: str | Path = OPS_FILE) -> set[str]:
    ops = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ops.add(line)
    return ops


def graph_ops(onnx_path: str | Path) -> tuple[set[str], int]:
    """(operator types used, default-domain opset) of an ONNX file, including subgraphs."""
    import onnx

    model = onnx.load(str(onnx_path))
    ops: set[str] = set()

    def walk(graph):
        for node in graph.node:
            ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
    walk(model.graph)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ops, opset


def check_onnx(onnx_path: str | Path) -> set[str]:
    """Raise ModelError if the graph uses an operator outside the list or an opset < 17."""
    ops, opset = graph_ops(onnx_path)
    bad = sorted(ops - supported_ops())
    if bad:
        raise ModelError(f"{onnx_path}: operators {bad} are not in {OPS_FILE.name} "
                         "(TensorRT's ONNX parser may reject them)")
    if opset < MIN_OPSET:
        raise ModelError(f"{onnx_path}: opset {opset} < {MIN_OPSET}")
    return ops
