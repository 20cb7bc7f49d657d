#!/usr/bin/env bash
# Installs the Home Assistant versions the real-Home-Assistant tests run (tests/homeassistant_real.rs), from the
# Python package registry, into cached virtualenvs with no runtime installs left for Home Assistant to do:
#
#   bash tests/homeassistant/install.sh              # both tested versions (at once); prints their paths
#   bash tests/homeassistant/install.sh 2026.11.0    # one of them
#   HA_TEST_CACHE=/path bash tests/homeassistant/install.sh    # cache directory (default /var/cache/plex-mqtt-bridge)
#
# - 2025.4.4, the oldest supported version that installs here: the newest that runs on the host's Python 3.13.0
#   (pyenv's), in the virtualenv $HA_TEST_CACHE/homeassistant-2025.4.4.
# - 2026.11.0, the current release: it needs Python >= 3.14.2, which Debian 12 lacks, so it runs in a Debian
#   unstable root with python3.14 made with debootstrap ($HA_TEST_CACHE/debian-sid; debootstrap is installed
#   with apt-get when missing), in the virtualenv /opt/homeassistant-2026.11.0 inside it.
#   tests/homeassistant/in-root.sh runs commands in that root (its mounts exist only while they run).
# Cold, both take about 1.5-2.5 min; each is reused once complete (a .complete marker written last), so a warm run
# is instant, and an interrupted one is redone. Needs root (apt-get, debootstrap, chroot).
#
# Each wheel carries homeassistant/package_constraints.txt, the exact versions it is tested with: installing with
# those as constraints avoids backtracking through dozens of sdists. The requirements of the integrations the
# tests set up (the frontend, the MQTT integration's pinned paho-mqtt, ...; tests/homeassistant/prepare.py lists
# them) are installed too, so `hass --skip-pip` finds everything it loads. Packages are installed with uv (a
# Home Assistant dependency, which it uses for its own installs): much faster than pip.
set -euo pipefail
OLDEST=2025.4.4
CURRENT=2026.11.0
CACHE=${HA_TEST_CACHE:-/var/cache/plex-mqtt-bridge}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$CACHE/debian-sid
# Debian packages the root gets after debootstrap's minimal base and Python 3.14: what builds the two extensions
# with no Python 3.14 wheel (pymicro-vad and pyspeex-noise, for the assist pipeline) and the JPEG library the
# camera integration loads. The root's .complete marker records the list, so a root made with another list is
# made again.
ROOT_PACKAGES="python3.14-dev g++ libturbojpeg0"

# A host Python 3.13 (for 2025.4.4).
host_python() {
  local candidate
  for candidate in "${HA_TEST_PYTHON:-}" python3.13 "$HOME/.pyenv/versions/3.13.0/bin/python3" /root/.pyenv/versions/3.13.0/bin/python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "install.sh: no Python 3.13 found (tried python3.13 and pyenv's 3.13.0); set HA_TEST_PYTHON" >&2
  exit 1
}

# Commands in the root reach the registries the way the host does: its resolver and CA bundle.
root_network() {
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
}

# The Debian unstable root with python3.14, built once.
debian_root() {
  if [ "$(cat "$ROOT/.complete" 2>/dev/null)" = "$ROOT_PACKAGES" ]; then
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: building the Debian root for Home Assistant $CURRENT needs root" >&2
    exit 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "install.sh: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  local mirror started=$SECONDS
  mirror=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  # --one-file-system: never follow a mount into the host's files.
  rm -rf --one-file-system "$ROOT"
  # The extra packages go in with apt afterwards: that is several times faster than debootstrap's --include.
  if ! debootstrap --variant=minbase --include=python3.14,python3.14-venv,ca-certificates sid "$ROOT" "$mirror" \
    >"$CACHE/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/debootstrap.log" >&2
    echo "install.sh: debootstrap failed (log: $CACHE/debootstrap.log)" >&2
    exit 1
  fi
  root_network
  # shellcheck disable=SC2086 # a list of package names
  bash "$HERE/in-root.sh" "$ROOT" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $ROOT_PACKAGES >/dev/null
  echo "$ROOT_PACKAGES" >"$ROOT/.complete"
  echo "install.sh: Debian unstable root with $(chroot "$ROOT" python3.14 --version) built in $ROOT in" \
    "$((SECONDS - started)) s" >&2
}

# install_venv VERSION VENV PYTHON [RUN...]: Home Assistant VERSION in the virtualenv VENV made by PYTHON, each
# command run through RUN (nothing on the host, in-root.sh ROOT in the root; VENV is a path as RUN sees it).
install_venv() {
  local version=$1 venv=$2 python=$3 started=$SECONDS
  shift 3
  local run=("$@")
  "${run[@]}" rm -rf "$venv"
  "${run[@]}" "$python" -m venv "$venv"
  # Under /tmp, the same path on the host and in the root; removed however this ends.
  wheels=$(mktemp -d /tmp/homeassistant-wheels-XXXXXX)
  trap 'rm -rf "$wheels"' EXIT
  "${run[@]}" "$venv/bin/pip" download -q --no-deps -d "$wheels" "homeassistant==$version" >&2
  local wheel
  wheel=$(ls "$wheels"/homeassistant-*.whl)
  "${run[@]}" "$venv/bin/python" -c 'import sys, zipfile
sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("homeassistant/package_constraints.txt"))' "$wheel" \
    >"$wheels/constraints.txt"
  "${run[@]}" "$venv/bin/pip" install -q "$(grep -E '^uv==' "$wheels/constraints.txt")" >&2
  local uv=("${run[@]}" env UV_LINK_MODE=copy UV_NATIVE_TLS=1
    "$venv/bin/uv" pip install -q --python "$venv/bin/python" -c "$wheels/constraints.txt")
  "${uv[@]}" "$wheel" >&2
  # What Home Assistant would install at its first start for the integrations the tests set up (the frontend,
  # the MQTT integration's paho-mqtt, ...); prepare.py says which, and checks that each of them imports.
  "${run[@]}" "$venv/bin/python" - requirements <"$HERE/prepare.py" >"$wheels/requirements.txt"
  "${uv[@]}" -r "$wheels/requirements.txt" >&2
  "${run[@]}" "$venv/bin/python" - check <"$HERE/prepare.py" >&2
  "${run[@]}" "$venv/bin/hass" --version >/dev/null
  "${run[@]}" touch "$venv/.complete"
  echo "install.sh: Home Assistant $version installed in $venv in $((SECONDS - started)) s" >&2
}

# Installs one version (unless it is complete) and prints where it is on this machine.
install_version() {
  local version=$1 venv
  # One installer per version at a time (CI's set-up and a test run, or two checkouts, may start together).
  exec 9>"$CACHE/.install-$version.lock"
  flock 9
  case $version in
  "$OLDEST")
    venv=$CACHE/homeassistant-$OLDEST
    if [ ! -f "$venv/.complete" ]; then
      install_venv "$OLDEST" "$venv" "$(host_python)"
    fi
    echo "$venv"
    ;;
  "$CURRENT")
    venv=/opt/homeassistant-$CURRENT
    debian_root
    if [ ! -f "$ROOT$venv/.complete" ]; then
      root_network
      install_venv "$CURRENT" "$venv" python3.14 bash "$HERE/in-root.sh" "$ROOT"
    fi
    echo "$ROOT$venv"
    ;;
  *)
    echo "install.sh: Home Assistant $version is not a tested version ($OLDEST, $CURRENT)" >&2
    exit 2
    ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- "$OLDEST" "$CURRENT"
fi
mkdir -p "$CACHE"
# Each version in its own process, all at once (mostly downloads); their paths printed in order.
pids=()
outputs=()
for version in "$@"; do
  out=$(mktemp)
  outputs+=("$out")
  (install_version "$version" >"$out") &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
  cat "${outputs[$i]}"
  rm -f "${outputs[$i]}"
done
exit "$failed"
