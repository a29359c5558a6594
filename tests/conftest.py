"""Shared fixtures: the demo geometry and small simulated datasets (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from damage_rig.calibration.model import load_calibration
from damage_rig.rig.config import PACKAGE_DATA

from tests.helpers.config import demo_config


@pytest.fixture(scope="session")
def demo_calib():
    return load_calibration(PACKAGE_DATA / "demo_calib.yaml")


@pytest.fixture(scope="session")
def small_sim_dataset(tmp_path_factory):
    """24 simulated items with noise, 2 views, 1 reference per SKU."""
    from damage_rig.tools.sim.generate import SimSettings, generate_dataset

    out = tmp_path_factory.mktemp("sim") / "ds"
    settings = SimSettings(items=24, seed=5, skus=8, refs_per_sku=1, damage_rate=0.5)
    return generate_dataset(out, load_calibration(PACKAGE_DATA / "demo_calib.yaml"), settings,
                            workers=1, progress=False)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The trained model for end-to-end tests: the shipped one (what CI has), or $RIG_TEST_MODEL_DIR."""
    from damage_rig.models import SHIPPED_DIR

    d = Path(os.environ.get("RIG_TEST_MODEL_DIR") or SHIPPED_DIR)
    if not (d / "model_card.yaml").is_file():
        pytest.skip(f"no trained model at {d} (models/shipped is made by the command in docs/models.md; "
                    "or set RIG_TEST_MODEL_DIR to a `rig train` output)")
    return d


@pytest.fixture
def make_config(tmp_path, model_dir):
    """make_config(**overrides): the demo config on the test model, state under tmp_path."""
    return lambda **overrides: demo_config(tmp_path, model_dir, **overrides)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session's reference-store tests (tests/helpers/postgres.py)."""
    from tests.helpers.postgres import Postgres, postgres_skip_reason

    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    pg = Postgres().init().start()
    yield pg
    pg.cleanup()


@pytest.fixture
def pg_url(postgres_server, request):
    """A fresh database on the session's server, named after the test."""
    import re

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres_server.new_database(f"t_{name}_{os.getpid()}")
