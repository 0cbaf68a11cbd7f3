#!/usr/bin/env bash
# The tools the fuzz and injection tests use to parse rendered files as their consumers do:
# nft (nftables, `nft -c -f`), systemd-analyze (systemd, on every Debian host) and the
# docker compose v2 CLI (`docker-compose config`). Bookworm ships only compose v1, so the
# v2 binary is taken from trixie's docker-compose .deb (apt-get download, no install) and
# cached in LAB_CACHE/compose/. Root + apt only; elsewhere the tests that need a tool skip
# and say which. Idempotent: a warm cache costs nothing.
set -euo pipefail
CACHE=${LAB_CACHE:-/var/tmp/rigctl-lab-cache}/compose
BIN=$CACHE/docker-compose
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "consumer tools: not root with apt; skipping" >&2; exit 0; }
export DEBIAN_FRONTEND=noninteractive
command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
[ -x "$BIN" ] && exit 0
mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$CACHE"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$work/sources.list"
apt_opts=(-qq -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$work/lists" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" download docker-compose)
dpkg-deb -x "$work"/docker-compose_*.deb "$work/x"
install -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
"$BIN" version
