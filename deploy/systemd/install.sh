#!/bin/sh
# Installs sealpost as the systemd service deploy/systemd/sealpost.service describes.
# Run as root from anywhere in the repository, after `cargo build --release --locked`:
#
#   deploy/systemd/install.sh [BINARY [FULLCHAIN PRIVKEY]]
#
#   BINARY     the sealpost binary (default: target/release/sealpost)
#   FULLCHAIN  the listeners' certificate chain and PRIVKEY its key (PEM), copied to
#   PRIVKEY    /etc/sealpost/tls/fullchain.pem and privkey.pem; run again with the new
#              files after each renewal (a certbot deploy hook), then `systemctl reload sealpost`
#
# What it sets up, so that the service user can read what it needs and change none of it:
#   - the system user and group `sealpost` (unless they exist);
#   - /usr/local/bin/sealpost, 0755;
#   - /etc/sealpost and /etc/sealpost/tls: root:sealpost 0750;
#   - /etc/sealpost/sealpost.toml (from deploy/sealpost.example.toml, never overwritten)
#     and the certificate and key: root:sealpost 0640;
#   - /etc/sealpost/passphrase (32 random bytes, base64, never overwritten): root 0600;
#     systemd reads it as root and hands it to the service (LoadCredential=);
#   - /etc/systemd/system/sealpost.service.
# The data directory /var/lib/sealpost is made by systemd on first start (StateDirectory=),
# owned by sealpost, 0700.
#
# SEALPOST_ROOT=DIR installs under DIR instead of / (for packaging, or to try it), and then
# neither creates a user nor calls systemctl; SEALPOST_USER and SEALPOST_GROUP name another
# existing account.
set -eu

cd "$(dirname "$0")/../.."
bin=${1:-target/release/sealpost}
root=${SEALPOST_ROOT:-}
user=${SEALPOST_USER:-sealpost}
group=${SEALPOST_GROUP:-$user}

if [ $# -ne 0 ] && [ $# -ne 1 ] && [ $# -ne 3 ]; then
  sed -n '5p' "$0" | sed 's/^# *//' >&2
  exit 2
fi
[ -f "$bin" ] || { echo "install.sh: no binary $bin; build it with cargo build --release --locked" >&2; exit 1; }

if ! id -u "$user" >/dev/null 2>&1; then
  if [ -n "$root" ]; then
    echo "install.sh: no user $user; a staged install (SEALPOST_ROOT) never creates one" >&2
    exit 1
  fi
  useradd --system --user-group --home-dir /var/lib/sealpost --no-create-home \
    --shell /usr/sbin/nologin "$user"
fi

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system"
install -m 0755 "$bin" "$root/usr/local/bin/sealpost"

install -d -m 0750 -o root -g "$group" "$root/etc/sealpost" "$root/etc/sealpost/tls"
if [ ! -e "$root/etc/sealpost/sealpost.toml" ]; then
  install -m 0640 -o root -g "$group" deploy/sealpost.example.toml "$root/etc/sealpost/sealpost.toml"
fi
if [ $# -eq 3 ]; then
  install -m 0640 -o root -g "$group" "$2" "$root/etc/sealpost/tls/fullchain.pem"
  install -m 0640 -o root -g "$group" "$3" "$root/etc/sealpost/tls/privkey.pem"
fi
if [ ! -e "$root/etc/sealpost/passphrase" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$root/etc/sealpost/passphrase")
fi

install -m 0644 deploy/systemd/sealpost.service "$root/etc/systemd/system/sealpost.service"
if [ -z "$root" ]; then
  systemctl daemon-reload
fi

cat <<EOF
Installed. Next:
  1. edit $root/etc/sealpost/sealpost.toml (hostname, listeners, [upstream], [inbound]);
  2. sealpost check-config --config /etc/sealpost/sealpost.toml --user $user
  3. systemctl enable --now sealpost && journalctl -u sealpost
EOF
