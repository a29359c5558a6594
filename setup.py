"""Package mapping for the design card's top-level folders.

Every Python folder of the repository (rig, calibration, models, tools,
kernels) installs under the single namespace ``damage_rig`` so that generic
names such as ``tools`` or ``models`` never land at the top of site-packages.
The rest of the metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ["rig", "calibration", "models", "tools", "kernels"]

packages: list[str] = []
package_dir: dict[str, str] = {}
for top in TOP_LEVEL:
    package_dir[f"damage_rig.{top}"] = top
    packages.append(f"damage_rig.{top}")
    packages += [f"damage_rig.{top}.{sub}" for sub in find_packages(top)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "damage_rig.rig": ["data/*.yaml"],
        "damage_rig.rig.review": ["static/*"],
        "damage_rig.kernels": ["*.cu", "*.h", "*.cuh"],
        "damage_rig.models": ["shipped/**/*", "trt_onnx_ops.txt"],
    },
    include_package_data=True,
)
