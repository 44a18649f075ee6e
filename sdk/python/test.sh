#!/usr/bin/env bash
# Runs the tests of the Python SDK (sdk/python/tests) and of every Python
# plugin (plugins/*/ with test_*.py files, e.g. plugins/py-echo). `make test`
# calls it. Uses the venv ${LARKWAY_PYENV:-.tools/pyenv} (relative to the
# repository root), creating it when missing, and installs the SDK into it in
# editable mode with its [test] extra. Extra arguments go to pytest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pyenv=${LARKWAY_PYENV:-.tools/pyenv}
case $pyenv in /*) ;; *) pyenv=$root/$pyenv ;; esac
export LARKWAY_PYENV=$pyenv # generate.sh (run by a test) uses the same venv

if [ ! -x "$pyenv/bin/python" ]; then
	echo "test.sh: creating venv $pyenv" >&2
	"${LARKWAY_BOOTSTRAP_PYTHON:-python3}" -m venv "$pyenv"
fi
py=$pyenv/bin/python
"$py" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

cd "$root"
targets=(sdk/python/tests)
for d in plugins/*/; do
	if compgen -G "${d}test_*.py" >/dev/null; then
		targets+=("${d%/}")
	fi
done
exec "$py" -m pytest -q -p no:cacheprovider --rootdir "$root" --import-mode=importlib "${targets[@]}" "$@"
