#!/usr/bin/env bash
# Set-up and everyday commands for a Debian or Ubuntu machine with a Rust toolchain.
#
#   deploy/dev.sh run [SEALPOST ARGS...]   build and run sealpost (default: serve) (installs build packages if missing)
#   deploy/dev.sh test                     run the whole test suite (installs test peers if missing)
#   deploy/dev.sh deps [build|test]        only install the system packages
set -euo pipefail

cd "$(dirname "$0")/.."

BUILD_PKGS=(clang libclang-dev pkg-config libssl-dev)
# dovecot-core, dovecot-lmtpd and dovecot-imapd: a private Dovecot (LMTP for the inbound TLS
# tests, IMAP for the IMAP proxy tests)
# (never the system's: the tests run their own instance with a config of their own).
# util-linux: setpriv, which runs the deployment tests' sealpost as an unprivileged user.
TEST_PKGS=(gnupg gpg-wks-client sq swaks libio-socket-ssl-perl libnet-ssleay-perl postfix python3 dovecot-core dovecot-lmtpd dovecot-imapd util-linux postgresql fetchmail nsd ldnsutils)

missing() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

install() {
  local need
  need=$(missing "$@")
  [ -z "$need" ] && return 0
  echo "dev.sh: installing system packages: $need" >&2
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  # postfix only provides smtp-sink and smtp-source to the tests; it is never configured or started.
  echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
  "${sudo[@]}" apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends $need
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  deps)
    case "${1:-test}" in
      build) install "${BUILD_PKGS[@]}" ;;
      *) install "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" ;;
    esac
    ;;
  run)
    install "${BUILD_PKGS[@]}"
    cargo build --release --locked
    if [ $# -eq 0 ]; then
      set -- serve
    fi
    exec target/release/sealpost "$@"
    ;;
  test)
    install "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked
    ;;
  *)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
