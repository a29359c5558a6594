"""Issue 13 defect 7: bad configuration that used to pass `rig config check` (or crash it), through
the CLI as a separate process, plus a property test of the loader."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA, parse_config
from damage_rig.rig.foundation.errors import ConfigError

BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB


def check(tmp_path, text: str | None = None, calib: str | bytes | None = None):
    calib_path = tmp_path / "demo_calib.yaml"
    shutil.copy(PACKAGE_DATA / "demo_calib.yaml", calib_path)
    if calib is not None:
        (calib_path.write_bytes if isinstance(calib, bytes) else calib_path.write_text)(calib)
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(text if text is not None else DEMO_CONFIG.read_text())
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "config", "check", str(cfg)],
                       capture_output=True, text=True, timeout=60, check=False)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def demo_with(**replace) -> str:
    text = DEMO_CONFIG.read_text()
    for old, new in replace.items():
        text, n = re.subn(rf"(?m)^(\s*){old}:.*$", rf"\g<1>{old}: {new}", text)
        assert n == 1, old
    return text


def test_alias_bomb_is_refused_quickly(tmp_path):
    assert len(BOMB) < 500
    rc, out, took = check(tmp_path, DEMO_CONFIG.read_text() + BOMB)
    assert rc == 1 and "alias" in out and "Traceback" not in out, out
    assert took < 10.0


@pytest.mark.parametrize("tail, words", [
    ("loop: &x [*x]\n", "cycle"),
    ("? [1, 2]\n: 3\n", "plain value"),
    ("name: second\n", "twice: lines 3 and"),
])
def test_structural_errors_are_one_line_each(tmp_path, tail, words):
    rc, out, _ = check(tmp_path, DEMO_CONFIG.read_text() + tail)
    assert rc == 1 and words in out and "Traceback" not in out, out


def test_merge_keys_are_supported():
    base = yaml.safe_load(DEMO_CONFIG.read_text())
    doc = DEMO_CONFIG.read_text().replace("cameras:\n  - name: top\n", "cameras:\n  - &cam\n    name: top\n", 1)
    doc = doc.replace("  - name: side\n", "  - <<: *cam\n    name: side\n", 1)
    assert "<<: *cam" in doc
    cfg = parse_config(doc, "t")
    assert cfg.cameras[1].name == "side" and cfg.cameras[1].fps == base["cameras"][1]["fps"]
    assert cfg.cameras[1].role == "side"  # the side camera's own keys win over the merged ones


@pytest.mark.parametrize("key, value", [("max_crops_mb", ".inf"), ("speed_mps", ".nan"),
                                        ("retention_days", ".inf"), ("max_crops_mb", "1e300")])
def test_unbounded_numbers_are_refused(tmp_path, key, value):
    rc, out, _ = check(tmp_path, demo_with(**{key: value}))
    assert rc == 1 and key in out and "Traceback" not in out, out


def test_gate_closer_than_the_decision_allows_is_refused(tmp_path):
    rc, out, _ = check(tmp_path, demo_with(gate_distance_m="0.01", speed_mps="10"))
    assert rc == 1 and "gate_distance_m" in out and "fail safe" in out, out


@pytest.mark.parametrize("field, value, words", [
    ("depth_units_mm", "0", "depth_units_mm"), ("depth_units_mm", ".nan", "depth_units_mm"),
    ("depth_units_mm", "-1", "depth_units_mm"), ("dist", "abc", "dist"), ("dist", "[1, 2]", "dist"),
])
def test_bad_calibration_values_are_refused(tmp_path, field, value, words):
    text = (PACKAGE_DATA / "demo_calib.yaml").read_text()
    new, n = re.subn(rf"(?m)^(\s*){field}:.*$", rf"\g<1>{field}: {value}", text, count=1)
    if n == 0:
        pytest.skip(f"{field} not in the demo calibration")
    if field == "dist" and re.search(r"(?m)^\s*dist:\s*$", text):  # block list: replace its items too
        new = re.sub(r"(?m)^(\s*)dist:\s*\n(\s*- .*\n)+", rf"\g<1>dist: {value}\n", text, count=1)
    rc, out, _ = check(tmp_path, calib=new)
    assert rc == 1 and words in out and "Traceback" not in out, out


def test_calibration_that_is_not_utf8_is_refused(tmp_path):
    rc, out, _ = check(tmp_path, calib=b"cameras:\n  top: \xff\xfe\n")
    assert rc == 1 and "UTF-8" in out and "Traceback" not in out, out


def test_property_loader_never_crashes_on_generated_yaml():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    scalars = hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=10)
    docs = hs.recursive(scalars, lambda c: hs.lists(c, max_size=4) | hs.dictionaries(hs.text(max_size=8), c,
                                                                                      max_size=4), max_leaves=20)
    base = yaml.safe_load(DEMO_CONFIG.read_text())
    keys = [(s, k) for s, v in base.items() if isinstance(v, dict) for k in v]

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(doc=docs, edits=hs.lists(hs.tuples(hs.sampled_from(keys), scalars | docs), max_size=4),
           junk=hs.text(max_size=60))
    def run(doc, edits, junk):
        import copy

        for text in (yaml.safe_dump(doc), junk):
            try:
                parse_config(text, "gen")
            except ConfigError:
                pass
        cfg = copy.deepcopy(base)
        for (section, key), value in edits:
            cfg[section][key] = value
        try:
            parse_config(yaml.safe_dump(cfg), "gen")
        except ConfigError as exc:
            assert exc.problems and all(p.startswith("gen:") for p in exc.problems)

    run()
