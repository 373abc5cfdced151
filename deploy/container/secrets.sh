#!/bin/sh
# Puts the files the container reads, but must not be in its image, where
# deploy/compose.yaml and the `podman run` line in deploy/container/Containerfile mount
# them, readable by the container's user (uid and gid 10025) and nobody else:
#
#   deploy/container/secrets.sh FULLCHAIN PRIVKEY
#
# makes deploy/container/secrets/ (0750) with tls/fullchain.pem, tls/privkey.pem and a new
# keyring passphrase in passphrase (kept if it exists), each group 10025, mode 0640.
# Run it as root (chgrp to a group you are not in needs root); for rootless podman run it
# under `podman unshare`, so that 10025 is the container's own group. Run it again with
# the new files after each certificate renewal, then restart the container.
#
# SEALPOST_SECRETS=DIR writes to DIR instead; SEALPOST_GID names another group id.
set -eu

[ $# -eq 2 ] || { sed -n '6p' "$0" | sed 's/^# *//' >&2; exit 2; }
out=${SEALPOST_SECRETS:-$(dirname "$0")/secrets}
gid=${SEALPOST_GID:-10025}

install -d -m 0750 -g "$gid" "$out" "$out/tls"
install -m 0640 -g "$gid" "$1" "$out/tls/fullchain.pem"
install -m 0640 -g "$gid" "$2" "$out/tls/privkey.pem"
if [ ! -e "$out/passphrase" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$out/passphrase")
fi
chgrp "$gid" "$out/passphrase"
chmod 0640 "$out/passphrase"
echo "secrets in $(cd "$out" && pwd), readable by gid $gid"
