"""ONNX Runtime on the CPU: the backend that runs everywhere (and the reference for TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..foundation.errors import ModelError
from . import INFERENCE


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, max_batch: int = 8, threads: int = 2):
        import onnxruntime as ort

        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ModelError(f"ONNX model {self.onnx_path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # one owner per core: the pool's threads sleep between runs instead of spinning on the
        # cores the rig's stages need (rig/foundation/threads.py)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors on corrupt files
            raise ModelError(f"ONNX model {self.onnx_path} cannot be loaded: {exc}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.max_batch = max_batch
        self.threads = threads

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.ndim != 4 or batch.dtype != np.float32:
            raise ModelError(f"inference input must be float32 (N, C, H, W), got {batch.dtype} {batch.shape}")
        if batch.shape[0] > self.max_batch:
            raise ModelError(f"batch of {batch.shape[0]} exceeds max_batch {self.max_batch}")
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch)})
        return dict(zip(self.output_names, outs))

    def describe(self) -> str:
        return f"CPU, {self.threads} thread(s), spinning off, fp32, {self.onnx_path.name}"


@INFERENCE.register("onnxruntime")
def open_onnxruntime(onnx_path, *, max_batch: int = 8, threads: int = 2, engine_dir=None, fp16: bool = False):
    return OnnxRuntimeBackend(onnx_path, max_batch=max_batch, threads=threads)
