#!/bin/sh
# Install damage-rig as a systemd service on the rig (run as root from a checkout).
#   sudo systemd/install.sh [CONFIG.yaml]
# Steps (docs/service.md explains each): service user in the device groups,
# a venv under /opt/damage-rig, the config and environment file under
# /etc/damage-rig, the unit under /etc/systemd/system, then enable + start.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/damage-rig
CONF_DIR=/etc/damage-rig
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

# 2. the code: a venv owned by root, readable by the service
python3 -m venv --system-site-packages "$PREFIX/venv"   # system site: JetPack's tensorrt bindings
"$PREFIX/venv/bin/pip" install --upgrade "$SRC[realsense]"
mkdir -p "$PREFIX/docs" && cp "$SRC/docs/service.md" "$PREFIX/docs/" 2>/dev/null || true

# 3. configuration (never overwrite an edited one)
install -d -m 0755 "$CONF_DIR"
[ -f "$CONF_DIR/damage-rig.env" ] || install -m 0644 "$SRC/systemd/damage-rig.env" "$CONF_DIR/damage-rig.env"
if [ -n "$CONFIG" ]; then
    install -m 0644 "$CONFIG" "$CONF_DIR/rig.yaml"
elif [ ! -f "$CONF_DIR/rig.yaml" ]; then
    echo "install.sh: no $CONF_DIR/rig.yaml yet: pass your rig's config as the first argument" >&2
fi
"$PREFIX/venv/bin/rig" config check "$CONF_DIR/rig.yaml" || echo "install.sh: fix the config before starting" >&2

# 4. the unit
install -m 0644 "$SRC/systemd/damage-rig.service" /etc/systemd/system/damage-rig.service
systemd-analyze verify /etc/systemd/system/damage-rig.service
systemctl daemon-reload
systemctl enable --now damage-rig.service
systemctl --no-pager status damage-rig.service || true
