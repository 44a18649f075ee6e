#!/usr/bin/env bash
# scripts/bench.sh - run `larkway bench` the way `make bench` and
# `make bench-1m` do: start Pulsar if it is not running (and stop it again
# afterwards), make the Python venv with the SDK if it is missing (for the
# Python plugin figure), pin GOMAXPROCS, then run bin/larkway bench with the
# given arguments. Results go where --out says (bench/results/ by default).
#
# Usage: scripts/bench.sh [larkway bench flags...]
#   LARKWAY_BENCH_GOMAXPROCS   GOMAXPROCS for the bench and its Go plugins (default 2)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

pulsar_up=0
scripts/pulsar.sh status >/dev/null 2>&1 && pulsar_up=1
trap '[ $pulsar_up = 1 ] || scripts/pulsar.sh stop || true' EXIT
scripts/pulsar.sh start
eval "$(scripts/env.sh)"

pyenv=${LARKWAY_PYENV:-.tools/pyenv}
if [ ! -x "$pyenv/bin/python" ]; then
	echo "bench.sh: creating venv $pyenv for the Python plugin" >&2
	"${LARKWAY_BOOTSTRAP_PYTHON:-python3}" -m venv "$pyenv"
	"$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check -e sdk/python
fi

procs=${LARKWAY_BENCH_GOMAXPROCS:-2}
echo "bench.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) before the bench (anything else running skews every figure)" >&2
exec bin/larkway bench --gomaxprocs "$procs" --python "$pyenv/bin/python" "$@"
