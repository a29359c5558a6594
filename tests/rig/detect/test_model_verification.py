"""Issue 13 defect 6: model files verified at load; the gallery pointer confined to the model folder.
Through `rig run` (a separate process, as systemd starts it) and the loader."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from damage_rig.rig.detect.gallery import current_version, load_gallery
from damage_rig.rig.detect.scoring import Scorer
from damage_rig.rig.foundation.errors import ModelError

from tests.helpers import faults as ft


@pytest.fixture
def model_copy(tmp_path, model_dir):
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def rig_run(tmp_path, model):
    cfg = ft.demo_config(tmp_path / "w", model)
    return subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "run", "--config", str(cfg),
                           "--sim-items", "1"], capture_output=True, text=True, timeout=120, check=False)


def test_tampered_onnx_stops_rig_run_with_the_file_named(tmp_path, model_copy):
    onnx = model_copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in a weight: ONNX Runtime would run it silently
    onnx.write_bytes(bytes(data))
    r = rig_run(tmp_path, model_copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{onnx}: SHA-256" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_card_without_hashes_is_refused(model_copy):
    card = model_copy / "model_card.yaml"
    text = card.read_text()
    card.write_text(text[: text.index("files:")] + text[text.index("reproduce:"):])
    with pytest.raises(ModelError, match="no SHA-256 for model.onnx"):
        Scorer.load(model_copy)


def test_tampered_gallery_is_refused(model_copy):
    v = current_version(model_copy)
    arrays = model_copy / "gallery" / v / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[-100] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"arrays.npz: SHA-256"):
        load_gallery(model_copy)


@pytest.mark.parametrize("pointer", ["../../../etc", "/etc", "v0001/../../x", "current", ""])
def test_gallery_pointer_cannot_leave_the_model_folder(model_copy, pointer):
    (model_copy / "gallery" / "current").write_text(pointer + "\n")
    with pytest.raises(ModelError, match="not a name like v0001"):
        load_gallery(model_copy)
    with pytest.raises(ModelError):
        load_gallery(model_copy, version="../" + current_version.__name__)
