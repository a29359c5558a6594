"""Backends register themselves; the config's choices are the registries'; the runtime stands without tools."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from damage_rig.rig import config
from damage_rig.rig.capture import CAPTURE
from damage_rig.rig.divert.base import LINKS
from damage_rig.rig.infer import INFERENCE
from damage_rig.rig.preprocess import PREPROCESS


@pytest.mark.parametrize("choices, registry, expected", [
    (config.CaptureSource, CAPTURE, {"realsense", "recording", "sim"}),
    (config.PreprocessBackendName, PREPROCESS, {"opencv", "twin", "cuda"}),
    (config.InferenceBackendName, INFERENCE, {"onnxruntime", "tensorrt"}),
])
def test_config_choices_are_the_registered_backends(choices, registry, expected):
    assert set(typing.get_args(choices)) == set(registry.names()) == expected


def test_the_simulator_registers_its_capture_source_from_its_own_side():
    from damage_rig.tools.sim.capture import open_sim_cameras

    assert CAPTURE.get("sim") is open_sim_cameras
    with pytest.raises(KeyError, match="choose one of"):
        CAPTURE.get("webcam")


def test_divert_backends_by_url_scheme():
    from damage_rig.rig.divert.link import open_serial
    from damage_rig.rig.divert.modbus import open_modbus

    assert set(LINKS.names()) == {"serial", "modbus-rtu"}
    assert LINKS.get("serial") is open_serial and LINKS.get("modbus-rtu") is open_modbus


def test_the_runtime_imports_no_tools_and_no_training_code():
    code = ("import importlib, pkgutil, sys\n"
            "import damage_rig.rig as r\n"
            "for m in pkgutil.walk_packages(r.__path__, 'damage_rig.rig.'):\n"
            "    if not m.name.startswith(('damage_rig.rig.cli', 'damage_rig.rig.commands')):\n"
            "        importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('damage_rig.tools', 'damage_rig.models')))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
