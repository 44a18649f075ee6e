#!/usr/bin/env bash
# scripts/promtool.sh - install promtool, Prometheus's config and rule checker,
# at a pinned version into .tools/bin (the Makefile puts .tools/bin on PATH).
# core/internal/deploytest uses it to run `promtool check config`,
# `promtool check rules` and `promtool test rules` on deploy/prometheus/.
#
# Usage: scripts/promtool.sh [install|version]
#
#   install  (default) build promtool with `go install` unless .tools/bin
#            already holds the pinned version. Idempotent. Needs only Go and
#            the Go module proxy: on a bare machine with a cold module cache
#            it takes about 3-4 minutes (≈135 modules, ~1 GB of module
#            cache) on 2 CPUs; seconds once installed.
#   version  print the pinned version.
#
# Why go install and not `apt-get install prometheus`: Debian 12 ships
# Prometheus 2.42 (PromQL and rule semantics of 2023) together with a server
# and a system service; this pins the current release and needs no root.
#
# The build leaves out Prometheus's service-discovery plugins except
# Kubernetes (the only one deploy/prometheus/prometheus.yml uses), which
# halves the build time; promtool's checks and rule tests are unaffected.
#
# Environment (optional):
#   PROMTOOL_BIN_DIR   install directory (default <repo>/.tools/bin)
set -euo pipefail

PROG=promtool.sh
# Prometheus release and the Go module version that carries it (v3.X.Y is
# published as module version v0.3XX.Y).
PROMTOOL_VERSION=3.16.0
PROMTOOL_MODULE_VERSION=v0.316.0
PROMTOOL_TAGS=remove_all_sd,enable_kubernetes_sd

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${PROMTOOL_BIN_DIR:-$ROOT/.tools/bin}
TARGET=$BIN_DIR/promtool

TMP_DIR=
trap '[ -z "$TMP_DIR" ] || rm -rf "$TMP_DIR"' EXIT

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

installed_version() {
	[ -x "$TARGET" ] || return 0
	"$TARGET" --version 2>/dev/null | sed -n 's/^promtool, version \([^ ]*\).*/\1/p' | head -n1
}

install() {
	if [ "$(installed_version)" = "$PROMTOOL_VERSION" ]; then
		log "promtool $PROMTOOL_VERSION already in $BIN_DIR"
		return 0
	fi
	command -v go >/dev/null 2>&1 || die "go is required to build promtool"
	mkdir -p "$BIN_DIR"
	# Build into a scratch directory and move into place, so an interrupted
	# or concurrent run never leaves a half-written binary behind.
	local start
	TMP_DIR=$(mktemp -d "$BIN_DIR/.promtool.XXXXXX")
	start=$(date +%s)
	log "building promtool $PROMTOOL_VERSION ($PROMTOOL_MODULE_VERSION) with go install; a cold module cache takes a few minutes"
	GOBIN=$TMP_DIR CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -modcacherw" go install -trimpath -tags "$PROMTOOL_TAGS" \
		-ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
		"github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_MODULE_VERSION"
	mv -f "$TMP_DIR/promtool" "$TARGET"
	[ "$(installed_version)" = "$PROMTOOL_VERSION" ] || die "installed promtool does not report version $PROMTOOL_VERSION"
	log "installed promtool $PROMTOOL_VERSION into $BIN_DIR in $(($(date +%s) - start)) s"
}

case ${1:-install} in
install) install ;;
version) printf '%s\n' "$PROMTOOL_VERSION" ;;
*) die "usage: $0 [install|version]" ;;
esac
