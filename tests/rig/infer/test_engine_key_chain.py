"""TensorRT engine key policy and the backend selection chain (no GPU needed)."""

import json
import logging

import pytest
from damage_rig.rig.foundation.errors import DeviceError, ModelError
from damage_rig.rig.foundation.hashing import file_sha256
from damage_rig.rig.infer import make_backend
from damage_rig.rig.infer.tensorrt import key_differences, make_key, resolve_engine, sidecar


def _onnx(tmp_path, content=b"graph-v1"):
    p = tmp_path / "model.onnx"
    p.write_bytes(content)
    return p


def _key(onnx, version="10.3.0", fp16=False, max_batch=8):
    return make_key(onnx, version, "Orin", "8.7", fp16, max_batch)


def _write_engine(tmp_path, onnx, key):
    path, action = resolve_engine(tmp_path, onnx, key)
    assert action == "build"
    path.write_bytes(b"engine")
    sidecar(path).write_text(json.dumps({**key.to_dict(), "engine_sha256": file_sha256(path)}))
    return path


def test_tampered_engine_is_refused_naming_the_file(tmp_path):
    onnx = _onnx(tmp_path)
    path = _write_engine(tmp_path, onnx, _key(onnx))
    path.write_bytes(b"engine, patched")
    with pytest.raises(ModelError, match=r"SHA-256 does not match") as exc:
        resolve_engine(tmp_path, onnx, _key(onnx))
    assert str(path) in str(exc.value)


def test_engine_without_a_recorded_hash_is_rebuilt(tmp_path):
    onnx = _onnx(tmp_path)
    path = _write_engine(tmp_path, onnx, _key(onnx))
    sidecar(path).write_text(json.dumps(_key(onnx).to_dict()))
    assert resolve_engine(tmp_path, onnx, _key(onnx))[1] == "rebuild"


def test_matching_key_loads(tmp_path):
    onnx = _onnx(tmp_path)
    path = _write_engine(tmp_path, onnx, _key(onnx))
    assert resolve_engine(tmp_path, onnx, _key(onnx)) == (path, "load")


def test_changed_model_is_detected(tmp_path):
    onnx = _onnx(tmp_path)
    _write_engine(tmp_path, onnx, _key(onnx))
    onnx.write_bytes(b"graph-v2")
    new = _key(onnx)
    assert resolve_engine(tmp_path, onnx, new)[1] == "rebuild"
    with pytest.raises(ModelError, match="onnx_sha256") as exc:
        resolve_engine(tmp_path, onnx, new, rebuild=False)
    assert "rig engine build" in str(exc.value)


def test_changed_tensorrt_version_is_detected(tmp_path):
    onnx = _onnx(tmp_path)
    path = _write_engine(tmp_path, onnx, _key(onnx, "10.3.0"))
    diffs = key_differences(json.loads(sidecar(path).read_text()), _key(onnx, "10.7.0"))
    assert diffs == ["tensorrt_version: engine has '10.3.0', need '10.7.0'"]
    with pytest.raises(ModelError, match="tensorrt_version"):
        resolve_engine(tmp_path, onnx, _key(onnx, "10.7.0"), rebuild=False)


def test_precision_and_batch_profile_get_their_own_engine(tmp_path):
    onnx = _onnx(tmp_path)
    p32 = _write_engine(tmp_path, onnx, _key(onnx))
    p16, action = resolve_engine(tmp_path, onnx, _key(onnx, fp16=True))
    assert action == "build" and p16 != p32
    p4, action = resolve_engine(tmp_path, onnx, _key(onnx, max_batch=4))
    assert action == "build" and p4 not in (p16, p32)


def test_missing_engine_refused_with_the_command(tmp_path):
    onnx = _onnx(tmp_path)
    with pytest.raises(ModelError, match="rig engine build --model MODEL_DIR --max-batch 8"):
        resolve_engine(tmp_path, onnx, _key(onnx), rebuild=False)


def test_corrupt_sidecar_is_a_mismatch(tmp_path):
    onnx = _onnx(tmp_path)
    path = _write_engine(tmp_path, onnx, _key(onnx))
    sidecar(path).write_text("{not json")
    assert resolve_engine(tmp_path, onnx, _key(onnx))[1] == "rebuild"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A 1x3x8x8 -> 1x3 ONNX graph (GlobalAveragePool + Flatten) written with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3])
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["input"], ["p"]),
                           helper.make_node("Flatten", ["p"], ["pooled"])], "tiny", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(m, str(path))
    return path


def _tensorrt_missing() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _tensorrt_missing(), reason="TensorRT is installed: chain falls through")
def test_tensorrt_unavailable_without_fallback_is_a_clear_error(tiny_onnx):
    with pytest.raises(DeviceError, match="allow_fallback"):
        make_backend("tensorrt", tiny_onnx, allow_fallback=False)


@pytest.mark.skipif(not _tensorrt_missing(), reason="TensorRT is installed: chain falls through")
def test_tensorrt_unavailable_falls_back_to_onnxruntime_and_logs(tiny_onnx, caplog):
    import numpy as np

    with caplog.at_level(logging.INFO, logger="damage_rig.rig.infer"):
        backend = make_backend("tensorrt", tiny_onnx, allow_fallback=True, max_batch=2)
    assert backend.name == "onnxruntime"
    assert any("falling back to onnxruntime" in r.getMessage() for r in caplog.records)
    batch = np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 3, 8, 8)
    np.testing.assert_allclose(backend.run(batch)["pooled"], batch.mean(axis=(2, 3)), rtol=1e-6)


def test_onnx_operator_check_accepts_a_supported_graph_and_names_a_bad_one(tiny_onnx, tmp_path):
    ops_mod = pytest.importorskip("damage_rig.models.onnx_ops")
    import onnx
    from onnx import TensorProto, helper

    assert ops_mod.check_onnx(tiny_onnx) >= {"GlobalAveragePool", "Flatten"}
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("NoSuchOp", ["input"], ["out"])], "bad", [x], [y])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(bad))
    with pytest.raises(ModelError, match="NoSuchOp"):
        ops_mod.check_onnx(bad)


def test_selftest_without_gpu_lists_skips_and_passes(capsys):
    from damage_rig.rig.cli import main

    try:
        import pycuda.driver  # noqa: F401
        pytest.skip("pycuda present: this test is about a machine without a GPU")
    except ImportError:
        pass
    rc = main(["selftest"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GPU: none" in out
    for name in ("twin-preprocess", "twin-height", "twin-align"):
        assert f"PASS  {name}" in out
    assert "SKIP  gpu-preprocess" in out and "SKIP  gpu-tensorrt" in out
    assert "verdict: PASS" in out
