#!/usr/bin/env bash
# Runs every check and test certserver has, installing what they need first.
# This is the one test command: `make test` and .ci/run call it.
#
#   scripts/test.sh            everything (about 5-10 minutes on 2 cores)
#   scripts/test.sh -run Foo   extra arguments go to `go test`
#
# The checks: gofmt, go vet, luacheck, then `go test -race` over every
# package, with the real nginx, Pebble and Badger. Missing dependencies
# make tests fail (never skip), so this script installs them first.
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

step "go test -race"
# -count=1: integration tests talk to real processes; never reuse a cached pass.
go test -race -count=1 -timeout 15m "$@" ./...
