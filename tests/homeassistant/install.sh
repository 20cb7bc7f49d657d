#!/usr/bin/env bash
# Installs the Home Assistant the real-Home-Assistant tests run (tests/homeassistant_real.rs) into a cached
# virtualenv, from the Python package registry, with no runtime installs left for it to do.
#
#   bash tests/homeassistant/install.sh            # installs (or reuses) and prints the virtualenv's path
#   HA_TEST_VENV=/path bash tests/homeassistant/install.sh
#
# Home Assistant 2025.4.4 is the newest that installs on Python 3.13.0 (2026.x needs Python >= 3.14.2). Its
# wheel carries homeassistant/package_constraints.txt, the exact versions it is tested with: installing with
# those as constraints avoids pip's backtracking through dozens of sdists. The MQTT integration's pinned
# paho-mqtt and the frontend are installed too, so `hass --skip-pip` finds everything it loads.
set -euo pipefail
HA_VERSION=2025.4.4
VENV=${HA_TEST_VENV:-/var/cache/plex-mqtt-bridge/homeassistant-$HA_VERSION}

if [ -x "$VENV/bin/hass" ] && [ -f "$VENV/.complete" ]; then
  echo "$VENV"
  exit 0
fi

python=""
for candidate in "${HA_TEST_PYTHON:-}" python3.13 "$HOME/.pyenv/versions/3.13.0/bin/python3" /root/.pyenv/versions/3.13.0/bin/python3; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "install.sh: no Python 3.13 found (tried python3.13 and pyenv's 3.13.0); set HA_TEST_PYTHON" >&2
  exit 1
fi

started=$SECONDS
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$python" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >&2
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheels" "homeassistant==$HA_VERSION" >&2
wheel=$(ls "$wheels"/homeassistant-*.whl)
"$VENV/bin/python" - "$wheel" "$wheels/constraints.txt" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("homeassistant/package_constraints.txt", sys.argv[2] + ".d")
import shutil
shutil.move(sys.argv[2] + ".d/homeassistant/package_constraints.txt", sys.argv[2])
PY
frontend=$(grep -E '^home-assistant-frontend==' "$wheels/constraints.txt")
paho=$(grep -E '^paho-mqtt==' "$wheels/constraints.txt")
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$wheels/constraints.txt" "$wheel" "$paho" "$frontend" >&2
"$VENV/bin/hass" --version >/dev/null
touch "$VENV/.complete"
echo "install.sh: Home Assistant $HA_VERSION installed in $VENV in $((SECONDS - started)) s" >&2
echo "$VENV"
