#!/usr/bin/env bash
# scripts/kubevalidate.sh - install kubernetes-validate (a PyPI package that
# ships the Kubernetes JSON schemas, so validation works offline) into the
# project's Python venv, where core/internal/deploytest finds it.
#
# Usage: scripts/kubevalidate.sh            install (idempotent), print its path
#
# Environment (optional):
#   LARKWAY_PYENV   the venv (default .tools/pyenv, relative to the repository
#                   root), created with python3 when missing
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pyenv=${LARKWAY_PYENV:-.tools/pyenv}
case $pyenv in /*) ;; *) pyenv=$root/$pyenv ;; esac
if [ ! -x "$pyenv/bin/python" ]; then
	echo "kubevalidate.sh: creating venv $pyenv" >&2
	"${LARKWAY_BOOTSTRAP_PYTHON:-python3}" -m venv "$pyenv"
fi
if [ "$("$pyenv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
	"$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
echo "$pyenv/bin/kubernetes-validate"
