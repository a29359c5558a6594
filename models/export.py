"""ONNX export with the checks that keep the rig's scores equal to the trained model's.

Export uses the dynamo exporter (opset 18, dynamic batch). After writing, the
graph is checked against the TensorRT operator list and run on ONNX Runtime
against the torch model on real inputs: an export that changes scores fails
here, not silently on the line.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..rig.foundation.errors import ModelError
from .arch import OUTPUT_NAMES
from .onnx_ops import check_onnx

log = logging.getLogger(__name__)

OPSET = 18
PARITY_TOL = 1e-3


def export_onnx(model, onnx_path: str | Path, sample: np.ndarray, tol: float = PARITY_TOL) -> dict:
    """Export ``model`` (DamageNet, eval mode) and verify it; returns {'max_abs_diff', 'opset', 'ops'}."""
    import onnxruntime as ort
    import torch

    onnx_path = Path(onnx_path)
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(sample, np.float32))
    batch = torch.export.Dim("batch", min=1, max=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"],
                                    output_names=list(OUTPUT_NAMES), opset_version=OPSET,
                                    dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(onnx_path))
    ops = check_onnx(onnx_path)
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUT_NAMES), {"input": sample.astype(np.float32)})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if diff > tol:
        raise ModelError(f"{onnx_path}: ONNX Runtime differs from the torch model by {diff:.2e} "
                         f"(> {tol}); the export changed the scores")
    return {"max_abs_diff": diff, "opset": OPSET, "ops": sorted(ops)}
