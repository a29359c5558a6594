"""Kernel tests build the CPU twin into a private cache, never the user's (used by their conftests)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_kernel_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DAMAGE_RIG_CACHE", str(tmp_path_factory.mktemp("damage-rig-cache")))
    yield
    mp.undo()
