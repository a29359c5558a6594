"""Every shipped .cu compiles with nvcc for the Jetson Orin (sm_87) with no warnings."""

import pytest
from damage_rig.kernels import loader

pytestmark = pytest.mark.nvcc


@pytest.fixture(scope="module")
def nvcc():
    exe = loader.find_nvcc()
    if exe is None:
        pytest.skip("nvcc not found (install the CUDA toolkit to run this check)")
    return exe


@pytest.mark.parametrize("module", sorted(loader.MODULES))
def test_compiles_for_orin_without_warnings(nvcc, module, tmp_path):
    out = tmp_path / f"{module}.cubin"
    stderr = loader.nvcc_compile(module, "sm_87", out)  # -Werror all-warnings: warnings fail
    assert out.stat().st_size > 0
    assert "warning" not in stderr.lower(), stderr


def test_every_declared_kernel_is_in_the_cubin(nvcc, tmp_path):
    """The KernelSpec table and the extern "C" names in the sources agree."""
    for module, specs in loader.MODULES.items():
        out = tmp_path / f"{module}.cubin"
        loader.nvcc_compile(module, "sm_87", out)
        blob = out.read_bytes()
        for spec in specs:
            assert spec.name.encode() + b"\0" in blob, f"{spec.name} missing from {module}.cubin"
