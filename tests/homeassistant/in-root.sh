#!/usr/bin/env bash
# Runs a command inside the Debian root that tests/homeassistant/install.sh builds for the current Home Assistant
# (it needs a newer Python than the host has), with /proc, /dev and /tmp of the host mounted in it:
#
#   bash tests/homeassistant/in-root.sh ROOT COMMAND [ARG...]
#
# The mounts live in a mount namespace of the command's own (unshare), so they exist only while it runs, are gone
# when it ends however it ends, and never show in the host's mount table (nothing to clean up, and two runs at once
# do not share them). /tmp is the host's at the same path, so a host path under /tmp works unchanged inside;
# the network (loopback) is the host's. The command runs as this process (each step execs the next), so its
# process id is this script's: signals sent to it reach the command itself. Needs root.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: in-root.sh ROOT COMMAND [ARG...]" >&2
  exit 2
fi
exec unshare --mount --propagation private -- /bin/sh -euc '
  root=$1
  shift
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --bind /tmp "$root/tmp"
  exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-60}" "$@"
' in-root "$@"
