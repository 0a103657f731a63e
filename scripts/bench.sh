#!/usr/bin/env bash
# Runs certserver's benchmarks and prints one markdown table of their
# figures, each next to its target where the project has one.
#
#   scripts/bench.sh           full sizes (about 3 minutes on 2 cores)
#   scripts/bench.sh --short   small stores and few iterations (under a
#                              minute): proves every benchmark still runs
#                              and parses; its figures are not measurements
#
# What runs (each benchmark's doc comment says more):
#   nginx       BenchmarkHandshake     TLS handshakes, Lua hook vs static ssl_certificate
#               BenchmarkIssuance      certificates/s from the local Pebble, HTTP-01 through nginx
#   certserver  BenchmarkCertEndpoint  GET /v1/certs/{sni} with 100,000 certificates stored
#   store       BenchmarkLookupCertificate, BenchmarkDue, BenchmarkAddDomains
#
# The raw `go test -bench` output is kept in bin/bench/. Exits non-zero when
# a benchmark fails (a missed target is shown in the table, not an error).
set -euo pipefail
cd "$(dirname "$0")/.."

short=0
case "${1:-}" in
  "") ;;
  --short) short=1 ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "bench.sh: unknown argument '$1' (the only option is --short)" >&2; exit 2 ;;
esac

say() { printf 'bench: %s\n' "$*" >&2; }

if [ "$short" = 1 ]; then
  handshake_time=1000x endpoint_time=2000x store_time=200x issuance_time=4x
  export CERTSERVER_BENCH_CERTS=10000 CERTSERVER_BENCH_ADD=20000 CERTSERVER_BENCH_DUE=10000,100000
else
  handshake_time=20000x endpoint_time=200000x store_time=1s issuance_time=32x
  unset CERTSERVER_BENCH_CERTS CERTSERVER_BENCH_ADD CERTSERVER_BENCH_DUE
fi

say "dependencies"
PEBBLE_BIN="$(scripts/deps.sh)"
export PEBBLE_BIN

out=bin/bench
mkdir -p "$out"
rm -f "$out"/*.txt

# bench FILE PACKAGE REGEXP BENCHTIME runs one package's benchmarks, showing
# their result lines as they come and keeping the whole output in FILE.
bench() {
  local file="$out/$1.txt" pkg=$2 re=$3 benchtime=$4
  say "$pkg: $re (-benchtime $benchtime)"
  if ! go test -run '^$' -bench "$re" -benchtime "$benchtime" -count 1 -timeout 30m "$pkg" >"$file" 2>&1; then
    cat "$file" >&2
    say "FAILED: $pkg $re (output above, also in $file)"
    exit 1
  fi
  grep -E '^Benchmark' "$file" >&2 || true
}

start=$(date +%s)
bench handshake ./nginx/ '^BenchmarkHandshake$' "$handshake_time"
bench endpoint ./certserver/ '^BenchmarkCertEndpoint$' "$endpoint_time"
bench store ./store/ '^(BenchmarkLookupCertificate|BenchmarkDue)$' "$store_time"
# One call adds CERTSERVER_BENCH_ADD domains (500,000 by default): one op is plenty.
bench add ./store/ '^BenchmarkAddDomains$' 1x
bench issuance ./nginx/ '^BenchmarkIssuance$' "$issuance_time"
elapsed=$(( $(date +%s) - start ))

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
mode=full
[ "$short" = 1 ] && mode="--short (smoke run: figures are not measurements)"
printf '\n## certserver benchmarks\n\n'
printf '%s, %s CPUs (%s), %s; mode %s; %ds.\n\n' "$(date -u +%Y-%m-%d)" "$(nproc)" "${cpu:-unknown CPU}" "$(go env GOVERSION)" "$mode" "$elapsed"

cat "$out/handshake.txt" "$out/endpoint.txt" "$out/store.txt" "$out/add.txt" "$out/issuance.txt" | awk -v certs="${CERTSERVER_BENCH_CERTS:-100000}" -v short="$short" '
# fmt prints a figure with a precision that suits its size.
function fmt(v) {
  if (v >= 1000) return sprintf("%.0f", v)
  if (v >= 10) return sprintf("%.1f", v)
  return sprintf("%.3g", v)
}
# judged says whether value met its target, unless the run was --short.
function judged(target, ok) {
  if (short == 1) return target " (not judged in --short)"
  return ok ? target ": met" : target ": **NOT met**"
}
function row(what, figure, value, target) {
  printf "| %s | %s | %s | %s |\n", what, figure, value, target
  rows++
}
/^Benchmark/ {
  name = $1
  sub(/-[0-9]+$/, "", name)          # the GOMAXPROCS suffix
  n[name] = 1
  order[++count] = name
  for (i = 3; i < NF; i += 2) v[name, $(i + 1)] = $i
}
END {
  print "| Benchmark | Figure | Value | Target |"
  print "|---|---|---|---|"
  for (k = 1; k <= count; k++) {
    b = order[k]
    if (b == "BenchmarkHandshake") {
      r = v[b, "lua/static"]
      if (r == "") continue
      row("TLS handshakes, Lua hook vs static `ssl_certificate`", "rate ratio lua/static", fmt(r), judged("≥ 0.97", r + 0 >= 0.97))
      row("", "Lua hook / static", fmt(v[b, "lua-hs/s"]) " / " fmt(v[b, "static-hs/s"]) " handshakes/s", "")
      row("", "nginx worker CPU per handshake, Lua / static", fmt(v[b, "lua-cpu-µs/hs"]) " / " fmt(v[b, "static-cpu-µs/hs"]) " µs (capacity ratio " fmt(v[b, "lua/static-cpu"]) ")", "")
    } else if (b ~ /^BenchmarkCertEndpoint\//) {
      via = b; sub(/^BenchmarkCertEndpoint\//, "", via)
      label = (via == "handler") ? "handler and store only, no network" : "over " via
      val = fmt(v[b, "lookups/s"]) " lookups/s"
      if (v[b, "p99-µs"] != "") val = val ", p99 " fmt(v[b, "p99-µs"]) " µs"
      row("Certificate endpoint, 100,000 certificates stored", label, val, "")
    } else if (b ~ /^BenchmarkLookupCertificate\//) {
      kind = b; sub(/^BenchmarkLookupCertificate\//, "", kind)
      row("Store lookup (Badger), " certs " certificates", kind, fmt(v[b, "ns/op"]) " ns/op", "")
    } else if (b ~ /^BenchmarkDue\//) {
      size = b; sub(/^BenchmarkDue\/domains=/, "", size)
      row("Scheduler `Due`: 1,000 due names", "among " size " domains", fmt(v[b, "ns/op"]) " ns/op", "")
      dues[++ndue] = b
    } else if (b ~ /^BenchmarkAddDomains\//) {
      what = b; sub(/^BenchmarkAddDomains\//, "", what)
      row("Store `AddDomains` in one call", what, fmt(v[b, "domains/s"]) " domains/s", "")
    } else if (b ~ /^BenchmarkIssuance\//) {
      w = b; sub(/^BenchmarkIssuance\//, "", w)
      row("Issuance from Pebble, HTTP-01 through nginx", w, fmt(v[b, "certs/s"]) " certs/s", "")
    }
  }
  if (ndue >= 2) {
    a = v[dues[1], "ns/op"]; z = v[dues[ndue], "ns/op"]
    g = z / a
    row("Scheduler `Due` growth", "largest store / smallest", fmt(g) "×", judged("≈ 1, must not grow with the store", g <= 2))
  }
  if (rows == 0) { print "bench.sh: no benchmark results parsed" > "/dev/stderr"; exit 1 }
}
'
