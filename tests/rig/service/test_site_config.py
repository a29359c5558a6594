"""The config's site sections (metrics, mqtt, scan): typos and bad values are errors with their line."""

from __future__ import annotations

import pytest
from damage_rig.rig.config import DEMO_CONFIG, parse_config
from damage_rig.rig.foundation.errors import ConfigError
from damage_rig.rig.service.metrics import is_loopback, parse_listen

SITE = """
metrics:
  listen: "127.0.0.1:9464"
mqtt:
  url: "mqtts://broker.site:8883"
  topic_prefix: "dc7/damage-rig"
scan:
  url: /dev/ttyACM0
  distance_m: 1.2
  on_wrong_item: pass
  codes: {"4006381333931": "sku007-box"}
"""


def test_site_sections_parse():
    cfg = parse_config(DEMO_CONFIG.read_text() + SITE)
    assert cfg.metrics.listen == "127.0.0.1:9464" and cfg.mqtt.url.startswith("mqtts://")
    assert cfg.scan.on_wrong_item == "pass" and cfg.scan.codes == {"4006381333931": "sku007-box"}
    assert parse_config(DEMO_CONFIG.read_text()).mqtt is None  # every section optional


@pytest.mark.parametrize("bad, key", [
    ('mqtt:\n  url: "http://broker:1883"\n', "mqtt.url"),
    ('mqtt:\n  topic_prefix: "a/#"\n', "mqtt.topic_prefix"),
    ('mqtt:\n  hots: x\n', "mqtt.hots"),
    ('metrics:\n  listen: "9464"\n', "metrics.listen"),
    ('scan:\n  url: /dev/ttyACM0\n  on_wrong_item: maybe\n', "scan.on_wrong_item"),
    ('scan:\n  url: mqtt\n', "<top>"),  # the WMS topic needs an mqtt section
])
def test_site_section_errors_name_the_key_and_line(bad, key):
    text = DEMO_CONFIG.read_text() + bad
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "rig.yaml")
    assert any(key in p for p in exc.value.problems), exc.value.problems
    assert all(p.startswith("rig.yaml:") for p in exc.value.problems)


def test_metrics_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
