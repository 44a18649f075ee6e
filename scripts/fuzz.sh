#!/usr/bin/env bash
# scripts/fuzz.sh - run every native fuzz target in the module for a while
# (go test -fuzz takes one target of one package per run). `make test` runs
# each briefly; long runs: FUZZTIME=10m scripts/fuzz.sh.
#
#   FUZZTIME   per target (default 20000x: an execution count, not a duration;
#              a duration can fail a clean run with "context deadline exceeded"
#              when it expires mid-exec on a loaded machine, golang/go#75804,
#              fixed only in Go 1.27)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-20000x}
grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' core sdk plugins proto 2>/dev/null | sort |
	while read -r file; do
		dir=./$(dirname "$file")
		for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
			echo "fuzz.sh: $target in $dir for $fuzztime" >&2
			if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 1 "$dir" 2>&1); then
				echo "$out" >&2
				exit 1
			fi
		done
	done
