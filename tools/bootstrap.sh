#!/usr/bin/env bash
# One entry point for a fresh clone: creates ./.venv, installs what the chosen
# action needs, then runs it.
#   bash tools/bootstrap.sh demo [rig demo args...]   # the rig on its embedded default
#   bash tools/bootstrap.sh test [pytest args...]     # the import contract (lint-imports), then the test suite
#   bash tools/bootstrap.sh shell                     # just install (dev extras) and print how to activate
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-demo}"
shift || true
PY="${PYTHON:-python3}"
VENV=.venv

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }

system_packages() {
  # pyrealsense2 needs Debian's libusb-1.0-0 to import; chromium drives the review page test;
  # the MQTT tests start Debian's mosquitto broker themselves; the reference-store tests PostgreSQL.
  local want=()
  have_lib libusb-1.0.so.0 || want+=(libusb-1.0-0)
  if [ "$action" = test ]; then
    command -v chromium >/dev/null 2>&1 || want+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
    command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || want+=(mosquitto)
    # the reference-store tests start their own PostgreSQL server (initdb as an unprivileged user)
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
  fi
  [ ${#want[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "bootstrap: cannot install ${want[*]} (not root, no sudo): tests needing them will be skipped" >&2
      return 0
    fi
  fi
  echo "bootstrap: apt-get install ${want[*]}"
  $sudo apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
    || echo "bootstrap: apt-get could not install ${want[*]}: tests needing them will be skipped" >&2
}

venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
      # Debian ships venv (ensurepip) separately: python3-venv
      rm -rf "$VENV"
      if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      else
        echo "bootstrap: '$PY -m venv' failed; install Debian's python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
      fi
      "$PY" -m venv "$VENV"
    fi
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
}

install() {
  local extras="$1" stamp="$VENV/.installed-$1"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    echo "bootstrap: pip install -e .[$extras]"
    "$VENV/bin/python" -m pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import damage_rig.rig" && touch "$stamp"
  fi
}

case "$action" in
  demo)
    venv; install "realsense"
    exec "$VENV/bin/rig" demo "$@" ;;
  test)
    system_packages; venv; install "dev,realsense,train,modbus,browser,catalogue"
    # the import layers first (pyproject.toml [tool.importlinter]): a broken contract fails the run
    "$VENV/bin/lint-imports"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  shell)
    system_packages; venv; install "dev,realsense,train,modbus,browser,catalogue"
    echo "bootstrap: ready; run: source $VENV/bin/activate" ;;
  *)
    echo "usage: bash tools/bootstrap.sh {demo|test|shell} [args...]" >&2; exit 2 ;;
esac
