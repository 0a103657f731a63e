#!/usr/bin/env bash
# Installs what certserver's tests and demo need when it is missing:
#   - Debian packages: nginx-light, the ngx_lua module, the stream module
#     (the TLS-ALPN-01 snippet certserver-stream.conf), lua-resty-core,
#     lua-resty-lrucache, luacheck (lua-check), chromium (the status
#     page test loads the page in headless Chromium), and postgresql
#     (PostgreSQL 15: the fleet store's tests start clusters of their own
#     with store/pgtest; Debian's own cluster service is left stopped),
#     and bind9 (BIND 9: the dns-01 tests start named of their own with
#     renewer/bindtest; Debian's own named service is left stopped), and
#     caddy (the peer of make bench --short's BenchmarkPeers; full runs
#     build a pinned Caddy themselves; Debian's own caddy service is left
#     stopped)
#   - Pebble, the ACME test CA, at the pinned version
# Safe to run again: it only installs what is not there yet.
# Needs root (or sudo) for apt-get; Pebble goes to $(go env GOPATH)/bin.
set -euo pipefail

PEBBLE_VERSION=v2.10.1
APT_PACKAGES=(nginx-light libnginx-mod-http-lua libnginx-mod-stream lua-resty-core lua-resty-lrucache lua-check chromium certbot postgresql bind9 caddy)

say() { printf 'deps: %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root or sudo to install ${missing[*]}"; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts nginx on port 80 when it is installed; the tests and the
  # demo run their own instances, so the system one is stopped again.
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    $sudo systemctl stop nginx || true
  fi
  # Debian also starts a PostgreSQL cluster on port 5432; the tests start
  # their own on ports picked at run time and never use it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet postgresql 2>/dev/null; then
    $sudo systemctl stop postgresql || true
  fi
  # And BIND on port 53; the dns-01 tests start their own named.
  if command -v systemctl >/dev/null && systemctl is-active --quiet named 2>/dev/null; then
    $sudo systemctl stop named || true
  fi
  # And Caddy on ports 80 and 443; BenchmarkPeers starts its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet caddy 2>/dev/null; then
    $sudo systemctl stop caddy || true
  fi
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
pebble="$gobin/pebble"
# Pebble prints "dev" as its version; the module version is in the binary.
if [ ! -x "$pebble" ] || ! go version -m "$pebble" 2>/dev/null | grep -qE "^\s+mod\s+github.com/letsencrypt/pebble/v2\s+${PEBBLE_VERSION}\b"; then
  say "installing pebble $PEBBLE_VERSION into $gobin"
  GOFLAGS=-mod=mod go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION}"
fi
echo "$pebble"
