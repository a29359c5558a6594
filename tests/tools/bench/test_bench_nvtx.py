"""NVTX ranges on the GPU path: pushed and popped around each inference, absent elsewhere, no-op without NVTX."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from damage_rig.tools.bench import driver, nvtx


class Backend:
    max_batch = 8

    def __init__(self, name):
        self.name = name

    def run(self, batch):
        return {"n": np.array([len(batch)])}

    def describe(self):
        return f"{self.name} backend"


@pytest.fixture
def recorder(monkeypatch):
    calls = []
    monkeypatch.setattr(nvtx, "_impl", (lambda msg: calls.append(("push", msg)), lambda: calls.append(("pop",))))
    return calls


def test_ranges_wrap_each_tensorrt_run_and_pass_everything_else_through(recorder):
    scorer = SimpleNamespace(backend=Backend("tensorrt"))
    driver.wrap_gpu_path(scorer)
    assert isinstance(scorer.backend, nvtx.NvtxBackend)
    assert scorer.backend.run(np.zeros((3, 1, 2, 2), np.float32))["n"][0] == 3
    assert scorer.backend.describe() == "tensorrt backend" and scorer.backend.max_batch == 8
    assert recorder == [("push", "infer[3]"), ("pop",)]
    driver.wrap_gpu_path(scorer)  # never wrapped twice
    assert not isinstance(scorer.backend._inner, nvtx.NvtxBackend)


def test_cpu_backends_are_left_alone(recorder):
    scorer = SimpleNamespace(backend=Backend("onnxruntime"))
    driver.wrap_gpu_path(scorer)
    assert not isinstance(scorer.backend, nvtx.NvtxBackend) and recorder == []


def test_range_pops_even_when_the_work_fails(recorder):
    with pytest.raises(ValueError), nvtx.nvtx_range("preprocess"):
        raise ValueError("boom")
    assert recorder == [("push", "preprocess"), ("pop",)]


def test_without_an_nvtx_library_ranges_are_no_ops(monkeypatch):
    monkeypatch.setattr(nvtx, "_impl", False)
    assert not nvtx.available()
    with nvtx.nvtx_range("x"):
        pass
    scorer = SimpleNamespace(backend=Backend("tensorrt"))
    driver.wrap_gpu_path(scorer)
    assert not isinstance(scorer.backend, nvtx.NvtxBackend)
