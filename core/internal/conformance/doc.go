// Package conformance holds the cross-language plugin conformance suite: one
// set of cases run through a real core (in-process, memory bus, Lark
// emulator) against a Go test plugin built on sdk/go (testdata/goplugin)
// and a Python one built on sdk/python (testdata/pyplugin), which must
// behave identically; plus the approval plugin's end-to-end test.
//
// The Python plugin runs on the venv sdk/python/test.sh creates
// (${LARKWAY_PYENV:-.tools/pyenv}); the suite fails, saying so, when it is
// missing: run sdk/python/test.sh (make test does) before go test.
package conformance
