"""The engine-key tests build kernels into a private cache, never the user's."""

from tests.helpers.kernel_cache import _private_kernel_cache  # noqa: F401 - the autouse fixture
