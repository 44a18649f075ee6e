#!/usr/bin/env bash
# scripts/images.sh - build the container images daemonlessly with buildah
# (Debian's, installed with apt when missing, like scripts/redis.sh does for
# Redis): the core, one per Go plugin, and the Python plugin base.
#
# Usage: scripts/images.sh [core|go-plugins|python-base|all]   (default all)
#
#   core         images/core.Containerfile: FROM scratch, the static
#                larkway binary, non-root, no shell
#   go-plugins   images/go-plugin.Containerfile for each of $GO_PLUGINS
#   python-base  images/python-base.Containerfile: Debian's python3 as a
#                minimal root filesystem (mmdebstrap, from Debian's mirror)
#                and a venv with the SDK (pip, from PyPI)
#
# Images are tagged $LARKWAY_IMAGE_REPO/larkway:$LARKWAY_IMAGE_TAG (the tag
# deploy/k8s/base/kustomization.yaml pins), .../larkway-plugin-<name>:TAG
# and .../larkway-python:TAG, in buildah's vfs storage (no daemon, no
# overlay mounts: works unprivileged-in-container). Push with
# `buildah --storage-driver vfs push IMAGE docker://...`.
#
# Environment (all optional):
#   LARKWAY_IMAGE_REPO   default ghcr.io/larkway
#   LARKWAY_IMAGE_TAG    default: newTag of deploy/k8s/base/kustomization.yaml
#   GO_PLUGINS           default "echo commands approval"
#   LARKWAY_IMAGES_DIR   build contexts and caches (default .tools/images)
set -euo pipefail

PROG=images.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
REPO=${LARKWAY_IMAGE_REPO:-ghcr.io/larkway}
TAG=${LARKWAY_IMAGE_TAG:-$(sed -n 's/^ *newTag: *//p' deploy/k8s/base/kustomization.yaml | head -1)}
GO_PLUGINS=${GO_PLUGINS:-echo commands approval}
WORK=${LARKWAY_IMAGES_DIR:-$root/.tools/images}
BUILDAH=(buildah --storage-driver vfs)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -n "$TAG" ] || die "no image tag: set LARKWAY_IMAGE_TAG or newTag in deploy/k8s/base/kustomization.yaml"

ensure() { # ensure COMMAND PACKAGE: install PACKAGE with apt when COMMAND is missing
	command -v "$1" >/dev/null 2>&1 && return 0
	command -v apt-get >/dev/null 2>&1 || die "$1 is missing and apt-get is not available"
	log "$1 not found; installing $2 with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
	command -v "$1" >/dev/null 2>&1 || die "$1 still missing after apt-get install $2"
}

# rootfs: what every scratch image needs besides its binary: the CA bundle
# (Lark's HTTPS), passwd and group naming the non-root user, an empty /tmp.
rootfs() {
	local dir=$1
	rm -rf "$dir" && mkdir -p "$dir/etc/ssl/certs" "$dir/tmp"
	chmod 1777 "$dir/tmp"
	[ -r /etc/ssl/certs/ca-certificates.crt ] || die "/etc/ssl/certs/ca-certificates.crt missing (apt-get install ca-certificates)"
	cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
	printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
}

bud() { # bud CONTEXT CONTAINERFILE IMAGE [ARGS...]
	local ctx=$1 file=$2 image=$3
	shift 3
	log "building $image"
	"${BUILDAH[@]}" bud --quiet --layers=false -f "$root/$file" -t "$image" "$@" "$ctx" >/dev/null
	# The checks the images promise: no shell, non-root.
	local user
	user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
	case $user in 0 | 0:* | root | root:* | "") die "$image runs as '$user', want non-root" ;; esac
	log "built $image (user $user)"
}

core() {
	local ctx=$WORK/core
	rm -rf "$ctx" && mkdir -p "$ctx/bin"
	rootfs "$ctx/rootfs"
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$TAG" -o "$ctx/bin/larkway" ./core/cmd/larkway
	bud "$ctx" images/core.Containerfile "$REPO/larkway:$TAG"
	no_shell "$REPO/larkway:$TAG"
	smoke "$REPO/larkway:$TAG" /usr/local/bin/larkway version
}

go_plugins() {
	local ctx=$WORK/go-plugins
	rm -rf "$ctx" && mkdir -p "$ctx/bin/plugins"
	rootfs "$ctx/rootfs"
	for p in $GO_PLUGINS; do
		CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/bin/plugins/$p" "./plugins/$p"
		bud "$ctx" images/go-plugin.Containerfile "$REPO/larkway-plugin-$p:$TAG" --build-arg "PLUGIN=$p"
		no_shell "$REPO/larkway-plugin-$p:$TAG"
		# Without --listen's TLS files the plugin must refuse (exit 2),
		# proving it runs in the image.
		local c
		c=$("${BUILDAH[@]}" from --quiet "$REPO/larkway-plugin-$p:$TAG")
		local rc=0
		"${BUILDAH[@]}" run --isolation chroot "$c" -- /plugin >/dev/null 2>&1 || rc=$?
		"${BUILDAH[@]}" rm "$c" >/dev/null
		[ "$rc" -ne 0 ] || die "$REPO/larkway-plugin-$p:$TAG: /plugin did not refuse to serve without TLS files"
	done
}

# no_shell fails if the image has any shell.
no_shell() {
	local c m
	c=$("${BUILDAH[@]}" from --quiet "$1")
	m=$("${BUILDAH[@]}" mount "$c")
	local found=""
	for sh in bin/sh bin/bash bin/dash bin/ash usr/bin/sh usr/bin/bash busybox bin/busybox; do
		[ -e "$m/$sh" ] && found="$found /$sh"
	done
	"${BUILDAH[@]}" umount "$c" >/dev/null
	"${BUILDAH[@]}" rm "$c" >/dev/null
	[ -z "$found" ] || die "$1 has a shell:$found"
}

python_base() {
	local ctx=$WORK/python-base
	ensure mmdebstrap mmdebstrap
	mkdir -p "$ctx"
	# Debian's python3 only (no shell is pulled in beyond what dpkg's
	# essential set brings; "essential" is the smallest variant that runs
	# dpkg's maintainer scripts). Cached: rebuilt when this script changes.
	local stamp
	stamp=$(sha256sum "$0" | cut -c1-16)
	if [ ! -f "$ctx/rootfs.tar" ] || [ "$(cat "$ctx/rootfs.stamp" 2>/dev/null)" != "$stamp" ]; then
		log "assembling Debian's python3 root filesystem with mmdebstrap (downloads from the Debian mirror)"
		mmdebstrap --quiet --variant=essential --include=python3-minimal,libpython3.11-stdlib,libstdc++6,ca-certificates \
			bookworm "$ctx/rootfs.new.tar" >/dev/null || die "mmdebstrap failed: the Python base needs Debian's mirror (no offline copy); the core and Go plugin images do not"
		rm -rf "$ctx/rootfs.tar" # mmdebstrap writes a tarball for a *.tar target
		mv "$ctx/rootfs.new.tar" "$ctx/rootfs.tar"
		echo "$stamp" >"$ctx/rootfs.stamp"
	fi
	# The venv is made with the host's Debian python3 (same version and
	# path as the image's), so its bin/python link resolves inside the image.
	rm -rf "$ctx/venv"
	/usr/bin/python3 -m venv "$ctx/venv" || die "/usr/bin/python3 -m venv failed (apt-get install python3-venv)"
	"$ctx/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile "$root/sdk/python" \
		|| die "installing the Python SDK into the image's venv failed (it needs PyPI)"
	"$ctx/venv/bin/python" -m pip uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
	bud "$ctx" images/python-base.Containerfile "$REPO/larkway-python:$TAG"
	smoke "$REPO/larkway-python:$TAG" /opt/larkway/venv/bin/python -c "import larkway, grpc, grpc_health, cryptography"
}

# smoke IMAGE ARGV...: run ARGV in a container of IMAGE (chroot isolation,
# no daemon) and fail if it fails: the image's binary really runs there.
smoke() {
	local image=$1 c
	shift
	c=$("${BUILDAH[@]}" from --quiet "$image")
	if ! "${BUILDAH[@]}" run --isolation chroot "$c" -- "$@" >/dev/null; then
		"${BUILDAH[@]}" rm "$c" >/dev/null
		die "$image: $* failed in the image"
	fi
	"${BUILDAH[@]}" rm "$c" >/dev/null
}

ensure buildah buildah
case ${1:-all} in
core) core ;;
go-plugins) go_plugins ;;
python-base) python_base ;;
all) core; go_plugins; python_base ;;
*) die "usage: $0 [core|go-plugins|python-base|all]" ;;
esac
