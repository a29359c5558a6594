#!/bin/sh
# Install damage-rig as a systemd service on the rig (run as root from a checkout).
#   sudo systemd/install.sh [CONFIG.yaml]
# Steps (docs/service.md explains each): service user in the device groups,
# a venv under /opt/damage-rig (with the jetson extra on a Jetson), the config,
# the calibration (and model) it names and the environment file under
# /etc/damage-rig, `rig config check` (a failing check stops here, before
# anything is enabled), the units (the rig and its review station) and a
# network drop-in for the MQTT broker / metrics scraper the config names,
# then enable + start.
# PREFIX, CONF_DIR, UNIT_DIR, RIG_EXTRAS and TEGRA_RELEASE override the defaults (tests use them).
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/damage-rig}
CONF_DIR=${CONF_DIR:-/etc/damage-rig}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
CONFIG=${1:-}

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it creates a user and writes /etc and /opt)" >&2
    exit 1
fi
command -v systemctl >/dev/null || { echo "install.sh: systemd not found" >&2; exit 1; }

# 1. the service user: no login, no home; the device groups come from the unit's SupplementaryGroups
for g in dialout video render; do getent group "$g" >/dev/null || groupadd --system "$g"; done
id damage-rig >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
    --home-dir /var/lib/damage-rig --shell /usr/sbin/nologin damage-rig

# 2. the code: a venv owned by root, readable by the service; on a Jetson (JetPack's
#    /etc/nv_tegra_release) the jetson extra too: pycuda for the kernels and TensorRT buffers
if [ -z "${RIG_EXTRAS:-}" ]; then
    RIG_EXTRAS=realsense
    [ -f "${TEGRA_RELEASE:-/etc/nv_tegra_release}" ] && RIG_EXTRAS=realsense,jetson
fi
python3 -m venv --system-site-packages "$PREFIX/venv"   # system site: JetPack's tensorrt bindings
"$PREFIX/venv/bin/pip" install --upgrade "$SRC[$RIG_EXTRAS]"
mkdir -p "$PREFIX/docs" && cp "$SRC/docs/service.md" "$PREFIX/docs/" 2>/dev/null || true

# 3. configuration (never overwrite an edited one), with the files it names
install -d -m 0755 "$CONF_DIR"
[ -f "$CONF_DIR/damage-rig.env" ] || install -m 0644 "$SRC/systemd/damage-rig.env" "$CONF_DIR/damage-rig.env"
if [ -n "$CONFIG" ]; then
    install -m 0644 "$CONFIG" "$CONF_DIR/rig.yaml"
    # the calibration file (and a model directory) named relative to the config go beside it
    "$PREFIX/venv/bin/python" - "$CONFIG" "$CONF_DIR" <<'PY'
import shutil, sys
from pathlib import Path
import yaml
src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
cfg = yaml.safe_load(src.read_text()) or {}
for key, rel in (("calibration", cfg.get("calibration")), ("model.dir", (cfg.get("model") or {}).get("dir"))):
    if not rel or rel == "shipped" or Path(rel).expanduser().is_absolute():
        continue
    s, d = src.parent / rel, dst / rel
    if not s.exists():
        continue  # `rig config check` below names what is missing
    d.parent.mkdir(parents=True, exist_ok=True)
    if s.is_dir():
        shutil.copytree(s, d, dirs_exist_ok=True)
    else:
        shutil.copy2(s, d)
    print(f"install.sh: {key}: {s} -> {d}")
PY
elif [ ! -f "$CONF_DIR/rig.yaml" ]; then
    echo "install.sh: no $CONF_DIR/rig.yaml yet: pass your rig's config as the first argument" >&2
    exit 1
fi
if ! "$PREFIX/venv/bin/rig" config check "$CONF_DIR/rig.yaml"; then
    echo "install.sh: $CONF_DIR/rig.yaml does not pass 'rig config check' (above): fix it, then run install.sh again;" \
         "nothing was enabled or started" >&2
    exit 1
fi

# 4. the units: the rig, its review station, and the network the config needs beyond loopback
install -m 0644 "$SRC/systemd/damage-rig.service" "$UNIT_DIR/damage-rig.service"
install -m 0644 "$SRC/systemd/damage-rig-review.service" "$UNIT_DIR/damage-rig-review.service"
# the network variant for a station on another machine (not enabled here; needs $CONF_DIR/review.token):
#   openssl rand -hex 16 > /etc/damage-rig/review.token && chmod 0600 /etc/damage-rig/review.token
#   systemctl disable --now damage-rig-review.service && systemctl enable --now damage-rig-review-station.service
install -m 0644 "$SRC/systemd/damage-rig-review-station.service" "$UNIT_DIR/damage-rig-review-station.service"
"$PREFIX/venv/bin/python" - "$CONF_DIR/rig.yaml" "$UNIT_DIR/damage-rig.service.d" <<'PY'
import socket, sys
from pathlib import Path
from urllib.parse import urlsplit
import yaml
cfg = yaml.safe_load(Path(sys.argv[1]).read_text()) or {}
allow, notes = [], []
mqtt = cfg.get("mqtt")
if mqtt:
    host = urlsplit(mqtt.get("url", "mqtt://127.0.0.1:1883")).hostname or "127.0.0.1"
    try:
        ips = sorted({a[4][0] for a in socket.getaddrinfo(host, None)})
    except OSError:
        ips = []
        print(f"install.sh: cannot resolve the MQTT broker {host}: add it to IPAddressAllow= by hand", file=sys.stderr)
    allow += ips
    notes.append(f"MQTT broker {host}")
metrics = cfg.get("metrics")
if metrics:
    host = str(metrics.get("listen", "127.0.0.1:9464")).rpartition(":")[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        notes.append("metrics scraped from the network: put the Prometheus server's address in "
                     "IPAddressAllow= below (`systemctl edit damage-rig`)")
d = Path(sys.argv[2])
d.mkdir(parents=True, exist_ok=True)
path = d / "10-site-network.conf"
if allow or notes:
    path.write_text("# written by systemd/install.sh from rig.yaml: " + "; ".join(notes) + "\n[Service]\n"
                    + "".join(f"IPAddressAllow={ip}\n" for ip in allow))
    print(f"install.sh: {path}: IPAddressAllow {' '.join(allow) or '(none)'}")
else:
    path.unlink(missing_ok=True)
PY
systemd-analyze verify "$UNIT_DIR/damage-rig.service" "$UNIT_DIR/damage-rig-review.service"
systemctl daemon-reload
systemctl enable --now damage-rig.service damage-rig-review.service
systemctl --no-pager status damage-rig.service || true
