#!/usr/bin/env bash
# scripts/chromium.sh - install Debian's Chromium for the browser tests
# (core/internal/console's chromedp tests drive it headless), as
# scripts/redis.sh installs Redis.
#
# Usage: scripts/chromium.sh {install|path}
#
#   install  install the `chromium` package with apt-get when no chromium
#            binary is on PATH; idempotent. Prints the binary's path.
#   path     print the binary's path; exit 1 when it is missing.
#
# The tests find the binary on PATH, or in $LARKWAY_CHROMIUM when set.
set -euo pipefail

PROG=chromium.sh

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_bin() {
	if [ -n "${LARKWAY_CHROMIUM:-}" ] && [ -x "$LARKWAY_CHROMIUM" ]; then
		printf '%s\n' "$LARKWAY_CHROMIUM"
		return 0
	fi
	local b
	for b in chromium chromium-browser; do
		if command -v "$b" >/dev/null 2>&1; then
			command -v "$b"
			return 0
		fi
	done
	return 1
}

cmd_install() {
	if find_bin; then
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || die "chromium is missing and apt-get is not available"
	log "chromium not found; installing it with apt-get"
	local sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
	find_bin || die "chromium still missing after apt-get install"
}

case ${1:-} in
install) cmd_install ;;
path) find_bin || die "chromium is not installed: run scripts/chromium.sh install" ;;
*)
	echo "usage: $PROG {install|path}" >&2
	exit 2
	;;
esac
