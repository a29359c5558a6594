"""The inference backend protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InferenceBackend(Protocol):
    name: str
    max_batch: int
    input_name: str
    output_names: list[str]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a float32 (N, C, H, W) batch, N <= max_batch; return every output by name."""
        ...

    def describe(self) -> str:
        """One line: backend, device, precision, model file."""
        ...
