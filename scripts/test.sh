#!/usr/bin/env bash
# Runs every check and test certserver has, installing what they need first.
# This is the one test command: `make test` and .ci/run call it.
#
#   scripts/test.sh            everything (about 3 minutes on 2 cores, more on
#                              a first run that installs packages)
#   scripts/test.sh -run Foo   extra arguments go to `go test`
#
# The checks: gofmt, go vet, luacheck, then `go test -race` over every
# package, with the real nginx, Pebble and Badger. Missing dependencies
# make tests fail (never skip), so this script installs them first.
# Before the tests, two smoke runs keep what is not a Go test from rotting: the demo
# (`scripts/demo.sh --check`, the README's main job, on its fixed loopback
# ports) and the benchmarks in their short mode (`scripts/bench.sh
# --short`: every benchmark builds and runs; its figures mean nothing).
# Extra arguments go to `go test` and skip the smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
PEBBLE_BIN="$(scripts/deps.sh)"
export PEBBLE_BIN

step "gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)"
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "luacheck"
luacheck --no-color --std ngx_lua lua

if [ $# -eq 0 ]; then
  step "demo (scripts/demo.sh --check)"
  scripts/demo.sh --check

  step "benchmarks, short mode (scripts/bench.sh --short)"
  scripts/bench.sh --short
fi

# Last, so that its summary closes the output.
step "go test -race"
# -count=1: integration tests talk to real processes; never reuse a cached pass.
go test -race -count=1 -timeout 15m "$@" ./...
