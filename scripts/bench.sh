#!/usr/bin/env bash
# Runs certserver's benchmarks and prints one markdown table of their
# figures, each next to its target where the project has one, with the
# machine they were measured on.
#
#   scripts/bench.sh           full sizes (6 to 8 minutes on 2 cores; the
#                              first run also builds the million-name
#                              data set: 4 more minutes, 4 GB of disk,
#                              and the 500,000 certbot lineages: 3 more
#                              minutes, 8 GB; the fleet join adds the
#                              filling of PostgreSQL, every run)
#   scripts/bench.sh --short   small sizes and few iterations (under a
#                              minute): proves every benchmark still runs
#                              and parses; its figures are not measurements
#
# What runs (each benchmark's doc comment says more):
#   nginx           BenchmarkHandshake       TLS handshakes, Lua hook vs static ssl_certificate
#                   BenchmarkPeers           the same certificates at 10,000 and 50,000 names from
#                                            certserver + nginx, Caddy (v2.11.9, built once with go
#                                            install into the cache; --short: Debian's caddy) and
#                                            nginx with a server block per name: start, first
#                                            handshakes, handshakes/s, memory, a new certificate
#                   BenchmarkStreamFront     TLS handshakes through the TLS-ALPN-01 stream snippet
#                                            (certserver-stream.conf) vs straight to the https server
#                   BenchmarkRenewalWave     handshakes while 1,000 hot names are renewed at once:
#                                            p99 with the Lua module's pre-warm vs prewarm = false,
#                                            windows of 6 s, 3 rounds alternated; the workers'
#                                            CPU per renewed name, the pre-warm's duration
#                   BenchmarkLuaNewNames     20,000 names new to one worker: its memory per name,
#                                            the first handshake's fetch and parses (stats())
#   cmd/certserver  BenchmarkMillion         `certserver serve` on 1,000,000 certificates: start,
#                                            memory, endpoint lookups, first handshakes through nginx
#                   BenchmarkMillionCgroup   the same sidecar in a 512 MiB memory cgroup: never
#                                            OOM-killed, lookups cold, over a 100,000-name hot set
#                                            (and how many its record cache served), warm
#                                            (needs root to create the cgroup)
#                   BenchmarkMillionEndpoint the same lookups in-process, with a CPU profile
#                   BenchmarkMillionInventory  the first inventory of that store in-process, its
#                                            pages dropped from the cache, then again warm
#                   BenchmarkMillionColdLookup  what one lookup reads from the disk, the
#                                            store's pages dropped from the cache
#                   BenchmarkImport          `certserver import` of 500,000 certbot lineages into
#                                            `certserver serve` with a Badger store on disk
#   certserver      BenchmarkBulkAdd500k     500,000 names in one POST /v1/domains
#                   BenchmarkBulkAdd500kPostgres  the same into a fleet's PostgreSQL store
#                   BenchmarkCertEndpoint    GET /v1/certs/{sni} with 100,000 certificates, in-process
#                   BenchmarkCertEndpointSealed  the same with keys sealed, as a fleet host reads its copy
#   store           BenchmarkDue, BenchmarkLookupCertificate, BenchmarkAddDomains
#                   BenchmarkStoreSize       bytes on disk per certificate (100,000 ECDSA P-256
#                                            of one intermediate), formatV1 vs formatV2 and upgraded
#   store/postgres  BenchmarkAddDomains      500,000 names into the fleet's PostgreSQL store
#                   BenchmarkChangesAfter    a joining host's copy of 100,000 certificates; a fleet
#                                            host's inventory of them (ScanCertificates vs pages)
#                   BenchmarkLatestVersion   the newest version, as each host asks for its lag
#                   BenchmarkClaimDue        3 renewing hosts claiming 10,000 due names among
#                                            1,000,000 under leases (claim; and claim, write, release)
#   renewer/ratelimit BenchmarkSharedReserve reservations/s of the fleet's one rate-limit budget
#                                            in PostgreSQL, four hosts reserving at once
#   store/replica   BenchmarkJoin            a new fleet host copying 1,000,000 certificates from a real
#                                            PostgreSQL into an empty Badger until ready (filling
#                                            PostgreSQL first takes about 3.5 minutes more)
#   store/...       the contract suite's bulk case (storetest) at 500,000 names
#                   on every engine: one AddDomains, then its checks (make test
#                   runs it at 20,000 under the race detector)
#   nginx           BenchmarkIssuance        certificates/s from the local Pebble, HTTP-01 through nginx
#   cmd/certserver  BenchmarkChallenge       time per certificate by challenge against Pebble through a
#                                            real BIND: http-01, dns-01 via rfc2136, dns-01 via the zone
#   renewer/dnszone BenchmarkZoneTXT         certserver's own DNS-01 zone: TXT answers/s over UDP
#                                            (16 clients in a process of their own) and their p99
#   nginx           BenchmarkFleetConvergence a fleet of 3 hosts (sidecar + nginx each, one PostgreSQL):
#                                            a certificate written on one host until every worker of
#                                            every nginx serves it, over 200 changes
#   nginx           BenchmarkFleetIssuance   certificates/s from the local Pebble through 3 fleet hosts
#                                            (4 renewer workers each) vs 1 host (12 workers): the ratio
#
# The million-name data set, the certbot tree of the import benchmark and
# Caddy are built once and kept in bin/bench/cache (or $CERTSERVER_BENCH_CACHE);
# delete them to build them again. The raw `go test
# -bench` output is kept in bin/bench/*.txt, the endpoint's CPU profile in
# bin/bench/endpoint.cpu with its `go tool pprof -top` in
# bin/bench/endpoint-top.txt. Exits non-zero when a benchmark fails (a
# missed target is shown in the table, not an error).
set -euo pipefail
cd "$(dirname "$0")/.."

short=0
case "${1:-}" in
  "") ;;
  --short) short=1 ;;
  -h|--help) sed -n '2,74p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "bench.sh: unknown argument '$1' (the only option is --short)" >&2; exit 2 ;;
esac

say() { printf 'bench: %s\n' "$*" >&2; }

if [ "$short" = 1 ]; then
  handshake_time=1000x endpoint_time=2000x store_time=200x issuance_time=4x fleet_issuance_time=6x zone_time=2000x reserve_time=200x challenge_time=2x
  issuance_re='^BenchmarkIssuance$/^workers=4$'
  export CERTSERVER_BENCH_CERTS=10000 CERTSERVER_BENCH_ADD=20000 CERTSERVER_BENCH_DUE=10000,100000 \
    CERTSERVER_BENCH_BULK=20000 CERTSERVER_BENCH_MILLION=20000 CERTSERVER_BENCH_FRESH=200 \
    CERTSERVER_BENCH_LOAD=2s CERTSERVER_BENCH_RATE=2000 CERTSERVER_BENCH_IMPORT=2000 \
    CERTSERVER_BENCH_CHANGES=2000 CERTSERVER_BENCH_JOIN=5000 CERTSERVER_BENCH_FLEET_CHANGES=10 \
    CERTSERVER_BENCH_SIZE=2000 \
    CERTSERVER_STORE_BULK=20000 CERTSERVER_BENCH_CLAIM_NAMES=20000 CERTSERVER_BENCH_CLAIM_DUE=1000 \
    CERTSERVER_BENCH_PEERS=300 CERTSERVER_BENCH_PEER_HS=300 CERTSERVER_BENCH_PEER_FIRST=20 CERTSERVER_BENCH_HOT=2000
  export CERTSERVER_BENCH_WAVE=50
else
  handshake_time=20000x endpoint_time=200000x store_time=1s issuance_time=32x fleet_issuance_time=96x zone_time=500000x reserve_time=5000x challenge_time=16x
  issuance_re='^BenchmarkIssuance$'
  unset CERTSERVER_BENCH_CERTS CERTSERVER_BENCH_ADD CERTSERVER_BENCH_DUE CERTSERVER_BENCH_BULK \
    CERTSERVER_BENCH_MILLION CERTSERVER_BENCH_FRESH CERTSERVER_BENCH_LOAD CERTSERVER_BENCH_RATE \
    CERTSERVER_BENCH_IMPORT CERTSERVER_BENCH_CHANGES CERTSERVER_BENCH_FLEET_CHANGES CERTSERVER_BENCH_SIZE \
    CERTSERVER_BENCH_PEERS CERTSERVER_BENCH_PEER_HS CERTSERVER_BENCH_PEER_FIRST CERTSERVER_BENCH_HOT CERTSERVER_BENCH_WAVE
  export CERTSERVER_BENCH_JOIN=1000000 CERTSERVER_STORE_BULK=500000 \
    CERTSERVER_BENCH_CLAIM_NAMES=1000000 CERTSERVER_BENCH_CLAIM_DUE=10000
fi
imports=${CERTSERVER_BENCH_IMPORT:-500000}
million=${CERTSERVER_BENCH_MILLION:-1000000}

say "dependencies"
PEBBLE_BIN="$(scripts/deps.sh)"
export PEBBLE_BIN

out=bin/bench
mkdir -p "$out"
rm -f "$out"/*.txt "$out"/*.cpu

# Caddy for BenchmarkPeers: in full runs v2.11.9, built once from its
# module into the cache, as the figures of issue 15 were measured; in
# --short the caddy on the PATH (Debian's package, from scripts/deps.sh).
CADDY_VERSION=v2.11.9
if [ "$short" = 0 ] && [ -z "${CERTSERVER_BENCH_CADDY:-}" ]; then
  cache=${CERTSERVER_BENCH_CACHE:-bin/bench/cache}
  mkdir -p "$cache/caddy-$CADDY_VERSION"
  caddy_dir=$(cd "$cache/caddy-$CADDY_VERSION" && pwd)
  if [ ! -x "$caddy_dir/caddy" ]; then
    say "building Caddy $CADDY_VERSION into $caddy_dir (once; a few minutes)"
    (cd "$caddy_dir" && GOBIN="$caddy_dir" GOFLAGS=-mod=mod go install "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION")
  fi
  export CERTSERVER_BENCH_CADDY="$caddy_dir/caddy"
fi
caddy_bin=${CERTSERVER_BENCH_CADDY:-$(command -v caddy || true)}
[ -n "$caddy_bin" ] || { say "no caddy: scripts/deps.sh installs Debian's package"; exit 1; }
# A go install'ed Caddy says "unknown" to `caddy version`; its build
# information names the module's version.
caddy_version=$(go version -m "$caddy_bin" 2>/dev/null | awk '$1 == "path" && $2 == "github.com/caddyserver/caddy/v2/cmd/caddy" {p = 1} $1 == "mod" && p {print $3; exit}')
[ -n "$caddy_version" ] || caddy_version=$("$caddy_bin" version | cut -d' ' -f1)
case "$caddy_bin" in
  /usr/bin/caddy) caddy_label="Caddy $caddy_version (Debian package)" ;;
  *) caddy_label="Caddy $caddy_version (go install)" ;;
esac

# bench FILE PACKAGE REGEXP BENCHTIME [FLAGS...] runs one package's
# benchmarks, showing their result lines as they come and keeping the
# whole output in FILE.
bench() {
  local file="$out/$1.txt" pkg=$2 re=$3 benchtime=$4
  shift 4
  say "$pkg: $re (-benchtime $benchtime)"
  if ! go test -run '^$' -bench "$re" -benchtime "$benchtime" -count 1 -timeout 30m "$@" "$pkg" >"$file" 2>&1; then
    cat "$file" >&2
    say "FAILED: $pkg $re (output above, also in $file)"
    exit 1
  fi
  grep -E '^Benchmark' "$file" >&2 || true
}

load_before=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s)
bench handshake ./nginx/ '^BenchmarkHandshake$' "$handshake_time"
bench stream ./nginx/ '^BenchmarkStreamFront$' "$handshake_time"
bench peers ./nginx/ '^BenchmarkPeers$' 1x -timeout 60m
bench wave ./nginx/ '^BenchmarkRenewalWave$' 1x
# i15-lua: what a name new to nginx costs a worker (memory, parse split);
# one op is one new name.
newnames_time=20000x
[ "$short" = 1 ] && newnames_time=200x
bench lua-newnames ./nginx/ '^BenchmarkLuaNewNames$' "$newnames_time"
if [ ! -e "${CERTSERVER_BENCH_CACHE:-bin/bench/cache}/million-v3-n$million/complete" ]; then
  say "building the data set of $million certificates first (once; kept in ${CERTSERVER_BENCH_CACHE:-bin/bench/cache})"
fi
bench million ./cmd/certserver/ '^BenchmarkMillion$' 1x -timeout 60m
bench million-cgroup ./cmd/certserver/ '^BenchmarkMillionCgroup$' 1x -timeout 60m
bench store-size ./store/ '^BenchmarkStoreSize$' 1x
bench million-endpoint ./cmd/certserver/ '^BenchmarkMillionEndpoint$' 1x -cpuprofile "$out/endpoint.cpu" -o "$out/certserver.test"
go tool pprof -top -nodecount 25 "$out/certserver.test" "$out/endpoint.cpu" >"$out/endpoint-top.txt" 2>&1 || true
rm -f "$out/certserver.test"
bench million-cold ./cmd/certserver/ '^BenchmarkMillionColdLookup$' 1x
bench million-inventory ./cmd/certserver/ '^BenchmarkMillionInventory$' 1x
if [ ! -e "${CERTSERVER_BENCH_CACHE:-bin/bench/cache}/certbot-v1-n$imports/complete" ]; then
  say "writing the certbot tree of $imports lineages first (once; kept in ${CERTSERVER_BENCH_CACHE:-bin/bench/cache})"
fi
bench import ./cmd/certserver/ '^BenchmarkImport$' 1x -timeout 60m
load_import=$(cut -d' ' -f1-3 /proc/loadavg) # the other jobs the import shared the CPUs with
# One call adds 500,000 names (CERTSERVER_BENCH_BULK): one op is plenty.
bench bulk ./certserver/ '^BenchmarkBulkAdd500k$' 1x
bench bulk-pg ./certserver/ '^BenchmarkBulkAdd500kPostgres$' 1x
bench endpoint ./certserver/ '^(BenchmarkCertEndpoint|BenchmarkCertEndpointSealed)$' "$endpoint_time"
bench store ./store/ '^(BenchmarkDue|BenchmarkLookupCertificate)$' "$store_time"
bench add ./store/ '^BenchmarkAddDomains$' 1x
# The PostgreSQL store, against a cluster the test binary starts
# (store/pgtest; fsync off: what the store and the server compute, not
# the disk's flushes).
bench pg-add ./store/postgres/ '^BenchmarkAddDomains$' 1x
bench pg-changes ./store/postgres/ '^BenchmarkChangesAfter$' 1x
bench pg-latest ./store/postgres/ '^BenchmarkLatestVersion$' "$store_time"
# One op claims the whole due set (filling the 1,000,000 names first
# takes about half a minute more).
bench pg-claim ./store/postgres/ '^BenchmarkClaimDue$' 1x
bench pg-reserve ./renewer/ratelimit/ '^BenchmarkSharedReserve$' "$reserve_time"
bench join ./store/replica/ '^BenchmarkJoin$' 1x -timeout 60m
# The contract suite's bulk case on every store engine, without the race
# detector: a test, not a benchmark, so it runs with -run.
say "./store/...: contract bulk case, $CERTSERVER_STORE_BULK names"
if ! go test -run '^Test[A-Za-z]*Contract$/^BulkAddDomains$' -count 1 -v -timeout 30m ./store/... >"$out/contract.txt" 2>&1; then
  cat "$out/contract.txt" >&2
  say "FAILED: the contract suite's bulk case (output above, also in $out/contract.txt)"
  exit 1
fi
grep -E 'AddDomains of [0-9]+ names into' "$out/contract.txt" >&2 || true
bench issuance ./nginx/ "$issuance_re" "$issuance_time"
bench zone ./renewer/dnszone/ '^BenchmarkZoneTXT$' "$zone_time"
bench challenge ./cmd/certserver/ '^BenchmarkChallenge$' "$challenge_time"
# One op makes all the changes (CERTSERVER_BENCH_FLEET_CHANGES, default 200).
bench fleet ./nginx/ '^BenchmarkFleetConvergence$' 1x
bench fleet-issuance ./nginx/ '^BenchmarkFleetIssuance$' "$fleet_issuance_time"
elapsed=$(( $(date +%s) - start ))
load_after=$(cut -d' ' -f1 /proc/loadavg)

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
mode=full
[ "$short" = 1 ] && mode="--short (smoke run: figures are not measurements)"
printf '\n## certserver benchmarks\n\n'
printf '%s; %s CPUs (`nproc`), %s, %s RAM; %s, %s; mode %s; %d s; load average %s before, %s after.\n\n' \
  "$(date -u +%Y-%m-%d)" "$(nproc)" "${cpu:-unknown CPU}" "${mem:-unknown}" "$(go env GOVERSION)" \
  "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(openssl version | cut -d' ' -f1-2)" "$mode" "$elapsed" \
  "$load_before" "$load_after"

cat "$out/handshake.txt" "$out/stream.txt" "$out/peers.txt" "$out/wave.txt" "$out/million.txt" "$out/million-cgroup.txt" "$out/million-endpoint.txt" "$out/million-cold.txt" "$out/million-inventory.txt" "$out/import.txt" "$out/bulk.txt" "$out/bulk-pg.txt" "$out/store.txt" \
  "$out/issuance.txt" "$out/zone.txt" "$out/challenge.txt" "$out/fleet.txt" "$out/fleet-issuance.txt" "$out/endpoint.txt" "$out/add.txt" "$out/store-size.txt" "$out/join.txt" "$out/contract.txt" \
  "$out/lua-newnames.txt" \
  <(sed 's/^Benchmark/BenchmarkPostgres/' "$out/pg-add.txt" "$out/pg-changes.txt" "$out/pg-latest.txt" "$out/pg-claim.txt" "$out/pg-reserve.txt") |
awk -v short="$short" -v million="$million" -v bulk="${CERTSERVER_BENCH_BULK:-500000}" -v imports="$imports" -v load="$load_import" \
    -v certs="${CERTSERVER_BENCH_CERTS:-100000}" -v sizecerts="${CERTSERVER_BENCH_SIZE:-100000}" -v wave="${CERTSERVER_BENCH_WAVE:-1000}" -v rate="${CERTSERVER_BENCH_RATE:-2000}" \
    -v pgadd="${CERTSERVER_BENCH_ADD:-500000}" -v pgchanges="${CERTSERVER_BENCH_CHANGES:-100000}" -v join="$CERTSERVER_BENCH_JOIN" \
    -v claimnames="$CERTSERVER_BENCH_CLAIM_NAMES" -v claimdue="$CERTSERVER_BENCH_CLAIM_DUE" -v caddy="$caddy_label" '
# fmt prints a figure with a precision that suits its size.
function fmt(v) {
  v += 0
  if (v >= 1000 || v <= -1000) return sprintf("%.0f", v)
  if (v >= 10 || v <= -10) return sprintf("%.1f", v)
  return sprintf("%.3g", v)
}
# ms prints microseconds as milliseconds.
function ms(us) { return fmt(us / 1000) " ms" }
# count prints n with thousands separators.
function count(n,   s, r) {
  s = sprintf("%d", n); r = ""
  while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
  return s r
}
# verdict says whether a target was met, or by how much it was missed
# (miss, already formatted); nothing is judged in --short.
function verdict(ok, miss) {
  if (short == 1) return "not judged (--short)"
  return ok ? "met" : "**missed** by " miss
}
function row(what, figure, value, target, result) {
  printf "| %s | %s | %s | %s | %s |\n", what, figure, value, target, result
  rows++
}
# has says whether b reported unit. Reading v[b, unit] creates the
# element, so ask has (or all_in) before reading a figure that may be
# missing.
function has(b, unit) { return (b, unit) in v }
# all_in says whether b reported every unit of the space-separated list.
function all_in(b, units,   u, k, i) {
  k = split(units, u, " ")
  for (i = 1; i <= k; i++) if (!((b, u[i]) in v)) return 0
  return 1
}
# fig prints b'"'"'s unit with fmt, or "missing" when b did not report it
# (without creating the element).
function fig(b, unit) { return has(b, unit) ? fmt(v[b, unit]) : "missing" }
# figx is fig of the figure divided by div.
function figx(b, unit, div) { return has(b, unit) ? fmt(v[b, unit] / div) : "missing" }
# judge is verdict for figures that may be missing from the output
# (present 0): a missing figure is never met.
function judge(present, ok, miss) {
  if (!present) return "**missing**"
  return verdict(ok, miss)
}
# The contract suite prints "AddDomains of N names into *pkg.Type: S s
# (R names/s)", once for each engine.
/AddDomains of [0-9]+ names into [^ ]+: / {
  for (i = 1; i <= NF; i++) if ($i == "into") { engine = $(i + 1); sub(/:$/, "", engine); sub(/^\*/, "", engine) }
  if (!(engine in bulk_s)) engines[++nengines] = engine
  for (i = 1; i <= NF; i++) if ($i == "of") bulk_n[engine] = $(i + 1); else if ($i == "into") bulk_s[engine] = $(i + 2)
}
/^Benchmark/ {
  name = $1
  sub(/-[0-9]+$/, "", name)          # the GOMAXPROCS suffix
  seen[name] = 1
  order[++n] = name
  v[name, "ns/op"] = $3
  for (i = 5; i < NF; i += 2) v[name, $(i + 1)] = $i
}
END {
  print "| Path | Figure | Value | Target | Result |"
  print "|---|---|---|---|---|"

  b = "BenchmarkHandshake"
  if (has(b, "lua/static")) {
    r = v[b, "lua/static"]
    row("**Handshake**: full TLS handshakes through nginx, Lua hook vs static `ssl_certificate` (same ECDSA P-256 certificate, alternated in 10 rounds)",
        "handshakes/s, Lua / static", fmt(v[b, "lua-hs/s"]) " / " fmt(v[b, "static-hs/s"]) " = **" fmt(r) "**", "≥ 0.97", verdict(r >= 0.97, fmt(0.97 - r)))
    row("", "nginx worker CPU per handshake, Lua / static", fmt(v[b, "lua-cpu-µs/hs"]) " / " fmt(v[b, "static-cpu-µs/hs"]) " µs", "", "")
  }
  b = "BenchmarkStreamFront"
  if (has(b, "front/direct")) {
    row("**Handshake** through the TLS-ALPN-01 stream snippet (`ssl_preread`, then a local hop with PROXY protocol) vs straight to the same https server (Lua hook, same certificate, alternated in 10 rounds)",
        "handshakes/s, front / direct", fmt(v[b, "front-hs/s"]) " / " fmt(v[b, "direct-hs/s"]) " = **" fmt(v[b, "front/direct"]) "**", "", "")
    row("", "nginx worker CPU per handshake, front / direct", fmt(v[b, "front-cpu-µs/hs"]) " / " fmt(v[b, "direct-cpu-µs/hs"]) " µs", "", "")
  }
  # Issue 15: the peers, each size a sub-benchmark; judged at 50,000.
  # Every figure through fig (or after all_in): one missing from the
  # output prints "missing", and a judged one is never "met".
  peers50 = 0
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkPeers\/names=/) {
    b = order[k]; size = b; sub(/^BenchmarkPeers\/names=/, "", size)
    judged = (size == 50000)
    if (judged) peers50 = 1
    kex = !has(b, "kex-curve") ? "key exchange missing" : v[b, "kex-curve"] == 29 ? "X25519" : (v[b, "kex-curve"] == 4588 ? "X25519MLKEM768" : "group " v[b, "kex-curve"])
    tlsv = !has(b, "tls-version") ? "TLS version missing" : v[b, "tls-version"] == 772 ? "TLS 1.3" : (v[b, "tls-version"] == 771 ? "TLS 1.2" : "TLS " v[b, "tls-version"])
    okc = has(b, "certserver/caddy"); oks = has(b, "certserver/static")
    okm = all_in(b, "certserver-pss-MB caddy-pss-MB")
    okf = all_in(b, "certserver-failures caddy-failures static-failures")
    okp = has(b, "certserver-hs-parses")
    rc = okc ? v[b, "certserver/caddy"] : 0; rs = oks ? v[b, "certserver/static"] : 0
    row("**Peers, " count(size) " names** (issue 15): certserver + nginx with the shipped snippets and defaults vs " caddy " loading the same certificates vs nginx with a `server {}` block and `ssl_certificate` per name; ECDSA P-256 leaves of random names under one intermediate; 4 clients, random names, no resumption, 6 alternated rounds after a warm-up that leaves every name parsed in every nginx worker, every leaf checked against the SNI; " kex ", " tlsv " for all three",
        "handshakes/s: certserver / Caddy / static", fig(b, "certserver-hs/s") " / " fig(b, "caddy-hs/s") " / " fig(b, "static-hs/s"), "", "")
    row("", "certserver / Caddy", "**" fig(b, "certserver/caddy") "×**", judged ? "≥ 1.1× at 50,000" : "", judged ? judge(okc, rc >= 1.1, fmt(1.1 - rc) "×") : "")
    row("", "certserver / static nginx", "**" fig(b, "certserver/static") "×**", judged ? "≥ 0.9× at 50,000" : "", judged ? judge(oks, rs >= 0.9, fmt(0.9 - rs) "×") : "")
    row("", "CPU per handshake of the server'"'"'s processes: certserver (nginx + sidecar) / Caddy / static",
        fig(b, "certserver-cpu-µs/hs") " / " fig(b, "caddy-cpu-µs/hs") " / " fig(b, "static-cpu-µs/hs") " µs", "", "")
    mc = okm ? v[b, "certserver-pss-MB"] : 0; md = okm ? v[b, "caddy-pss-MB"] : 0
    row("", "memory after the rounds, Pss of all processes (anonymous, file, shared memory); Rss summed: certserver (nginx + sidecar) / Caddy / static",
        "**" fig(b, "certserver-pss-MB") "** (" fig(b, "certserver-anon-MB") ", " fig(b, "certserver-file-MB") ", " fig(b, "certserver-shmem-MB") "); " fig(b, "certserver-rss-MB") " / **" \
          fig(b, "caddy-pss-MB") "** (" fig(b, "caddy-anon-MB") ", " fig(b, "caddy-file-MB") ", " fig(b, "caddy-shmem-MB") "); " fig(b, "caddy-rss-MB") " / " \
          fig(b, "static-pss-MB") " (" fig(b, "static-anon-MB") ", " fig(b, "static-file-MB") ", " fig(b, "static-shmem-MB") "); " fig(b, "static-rss-MB") " MB",
        judged ? "certserver ≤ Caddy at 50,000" : "", judged ? judge(okm, mc <= md, fmt(mc - md) " MB") : "")
    row("", "certserver'"'"'s Pss: nginx / sidecar; an nginx worker'"'"'s anonymous memory, and per name (every worker holds every name)",
        fig(b, "certserver-nginx-pss-MB") " / " fig(b, "certserver-sidecar-pss-MB") " MB; " fig(b, "certserver-worker-anon-MB") " MB, " fig(b, "certserver-worker-KB/name") " KB a name", "", "")
    f = okf ? v[b, "certserver-failures"] + v[b, "caddy-failures"] + v[b, "static-failures"] : 0
    row("", "handshakes that did not serve the name'"'"'s own certificate (a fallback, an error): certserver / Caddy / static",
        fig(b, "certserver-failures") " / " fig(b, "caddy-failures") " / " fig(b, "static-failures"), "0", judge(okf, f == 0, sprintf("%d", f)))
    row("", "warm-up passes over every name (certserver: each pass through one nginx worker, until every worker had parsed every name; Caddy and static as many): certserver / Caddy / static",
        fig(b, "certserver-warm-passes") " / " fig(b, "caddy-warm-passes") " / " fig(b, "static-warm-passes"), "", "")
    ws = ""
    for (w = 1; has(b, "certserver-w" w "-hs-parses"); w++) ws = ws (w > 1 ? " / " : "") fmt(v[b, "certserver-w" w "-hs-parses"])
    hp = okp ? v[b, "certserver-hs-parses"] : 0
    row("", "records certserver'"'"'s nginx workers parsed on the handshake path during the rounds, each worker (Caddy and static parse only when they load)",
        ws == "" ? "missing" : ws, "0 (every name held by every worker)", judge(okp, hp == 0, fmt(hp)))
    row("", "first handshake of a name never asked for, p50 / p99: certserver / Caddy / static",
        figx(b, "certserver-first-p50-µs", 1000) " / " figx(b, "certserver-first-p99-µs", 1000) " ms; " figx(b, "caddy-first-p50-µs", 1000) " / " figx(b, "caddy-first-p99-µs", 1000) " ms; " \
          figx(b, "static-first-p50-µs", 1000) " / " figx(b, "static-first-p99-µs", 1000) " ms", "", "")
    row("", "start until the right certificate is served; a new certificate until served (admin API import / Caddy `/load` / new server block and reload): certserver / Caddy / static",
        figx(b, "certserver-start-ms", 1000) " / " figx(b, "caddy-start-ms", 1000) " / " figx(b, "static-start-ms", 1000) " s; " \
          fig(b, "certserver-new-ms") " / " fig(b, "caddy-new-ms") " / " fig(b, "static-new-ms") " ms", "", "")
  }
  if (short == 0 && !peers50)
    row("**Peers, 50,000 names** (issue 15): certserver + nginx vs " caddy " vs static nginx", "handshakes/s, memory", "missing (no BenchmarkPeers/names=50000 in the output)",
        "≥ 1.1× Caddy, ≥ 0.9× static, memory ≤ Caddy'"'"'s", "**missing**")

  b = "BenchmarkRenewalWave"
  if (has(b, "on-wave-p99-µs")) {
    before = v[b, "on-before-p99-µs"]; during = v[b, "on-wave-p99-µs"]
    # within noise: at most a quarter (or 1 ms) above the p99 before
    limit = before * 1.25; if (limit < before + 1000) limit = before + 1000
    row("**Handshake** during a renewal wave: " count(wave) " hot names renewed at once while 4 clients make handshakes over random ones of them (nginx with 2 workers that both hold every name; the sidecar is the test one, answering from memory, the new certificates issued before; quiet and wave windows of equal length, " (wave < 1000 ? "0.5" : "6") " s each, the wave window from the renewal, the two sides alternated, " (wave < 1000 ? "1 round" : "3 rounds") ", handshakes pooled)",
        "p99 before / during the wave, pre-warm (default)", ms(before) " / **" ms(during) "**", "unchanged within noise (≤ 1.25× before, or +1 ms)", verdict(during <= limit, ms(during - limit)))
    row("", "the same with `prewarm = false`", ms(v[b, "off-before-p99-µs"]) " / " ms(v[b, "off-wave-p99-µs"]), "", "")
    row("", "wave p99 / quiet p99 of the same round, median of the rounds: pre-warm / off; from the renewal until every worker pre-warmed the wave (1/32 of a worker, within half of `prewarm_wait`); CPU of the workers per renewed name: pre-warm (a wave renewed with no handshakes) / off (beyond what the handshakes of the wave window cost)",
        fmt(v[b, "on-wave-p99-ratio"]) "× / " fmt(v[b, "off-wave-p99-ratio"]) "×; " fmt(v[b, "on-prewarm-s"]) " s; " fmt(v[b, "on-prewarm-cpu-µs/name"]) " / " fmt(v[b, "off-wave-cpu-µs/name"]) " µs", "", "")
    row("", "p50 during the wave, pre-warm / off; parses on the handshake path a wave, pre-warm / off",
        ms(v[b, "on-wave-p50-µs"]) " / " ms(v[b, "off-wave-p50-µs"]) "; " fmt(v[b, "on-wave-hs-parses"]) " / " fmt(v[b, "off-wave-hs-parses"]), "0 with pre-warm", verdict(v[b, "on-wave-hs-parses"] == 0, fmt(v[b, "on-wave-hs-parses"])))
  }
  # i15-lua: BenchmarkLuaNewNames, per-worker memory and first-handshake
  # split, with a key per name and with one key shared by all.
  b = "BenchmarkLuaNewNames/keys=unique"
  if (has(b, "anon-B/name")) {
    m = v[b, "anon-B/name"]
    s = "BenchmarkLuaNewNames/keys=shared"
    row("**Lua module**: memory a cached name costs an nginx worker (ECDSA P-256 leaves under one intermediate, leaf format; RssAnon growth after a Lua GC / names)",
        "per name, own key / shared key; shared dict per name", "**" fmt(m / 1024) " KB** / " fmt(v[s, "anon-B/name"] / 1024) " KB; " fmt(v[b, "shm-B/name"] / 1024) " KB", "≤ 4 KB",
        verdict(m <= 4096, fmt((m - 4096) / 1024) " KB: a parsed OpenSSL 3.0 leaf alone is 4.6 KB, its key 2.2 KB"))
    row("", "the same, own key, by where it lies: glibc heap (OpenSSL leaf and key) / LuaJIT mappings (of it the live Lua heap)",
        fmt(v[b, "heap-B/name"] / 1024) " KB / " fmt(v[b, "mmap-B/name"] / 1024) " KB (" fmt(v[b, "lua-B/name"] / 1024) " KB)", "", "")
    row("", "first handshake split p50 / p99 (4 clients through one worker: the fetch waits for the others'"'"' handshakes too): fetch, leaf parse, key parse, chain from cache",
        ms(v[b, "fetch-p50-µs"]) " / " ms(v[b, "fetch-p99-µs"]) "; " ms(v[b, "cert-p50-µs"]) " / " ms(v[b, "cert-p99-µs"]) "; " ms(v[b, "key-p50-µs"]) " / " ms(v[b, "key-p99-µs"]) "; " ms(v[b, "chain-p50-µs"]) " / " ms(v[b, "chain-p99-µs"]), "", "")
    row("", "the same with the key already parsed (shared): fetch, leaf parse, chain",
        ms(v[s, "fetch-p50-µs"]) " / " ms(v[s, "fetch-p99-µs"]) "; " ms(v[s, "cert-p50-µs"]) " / " ms(v[s, "cert-p99-µs"]) "; " ms(v[s, "chain-p50-µs"]) " / " ms(v[s, "chain-p99-µs"]), "", "")
  }
  b = "BenchmarkMillion"
  names = count(million)
  if (has(b, "added-p99-µs")) {
    a = v[b, "added-p99-µs"]
    row("**Handshake**: first handshake for a name not in nginx'"'"'s caches (Lua fetches it from the sidecar holding " names " certificates), minus a cached one",
        "added latency p50 / p99; every leaf of the data set has the same key, which the worker parses once: the key-pool case", ms(v[b, "added-p50-µs"]) " / **" ms(a) "**", "p99 ≤ 0.6 ms with the key pool", verdict(a <= 600, ms(a - 600)))
    # A key per name adds one key parse to every first handshake; the
    # benchmark of the Lua module measures it (the size of the store does
    # not change it), so the key-per-name figure is the sum of the p99s.
    k = "BenchmarkLuaNewNames/keys=unique"
    if (has(k, "key-p99-µs")) {
      u = a + v[k, "key-p99-µs"]
      row("", "added latency p99 with a key per name: the above plus the key parse'"'"'s p99 (Lua module row)", "**" ms(u) "**", "p99 ≤ 1 ms", verdict(u <= 1000, ms(u - 1000)))
    }
    row("", "handshake p50 / p99: first, cached, static",
        ms(v[b, "first-hs-p50-µs"]) " / " ms(v[b, "first-hs-p99-µs"]) "; " ms(v[b, "cached-hs-p50-µs"]) " / " ms(v[b, "cached-hs-p99-µs"]) "; " ms(v[b, "static-hs-p50-µs"]) " / " ms(v[b, "static-hs-p99-µs"]), "", "")
    # i15-tail: the split of these first handshakes as the Lua module
    # times it (stats(), every worker), the key parse from the Lua
    # module row (every leaf of the data set has one key), and where
    # the time goes by the kernel accounting.
    if (has(b, "fetch-p50-µs")) {
      key = has(k, "key-p50-µs") ? ms(v[k, "key-p50-µs"]) " / " ms(v[k, "key-p99-µs"]) " (Lua module row)" : "missing"
      row("", "first handshake split p50 / p99: fetch from the sidecar, leaf parse, key parse, chain from cache; the whole parse",
          ms(v[b, "fetch-p50-µs"]) " / " ms(v[b, "fetch-p99-µs"]) "; " ms(v[b, "cert-p50-µs"]) " / " ms(v[b, "cert-p99-µs"]) "; " key "; " ms(v[b, "chain-p50-µs"]) " / " ms(v[b, "chain-p99-µs"]) "; " ms(v[b, "parse_handshake-p50-µs"]) " / " ms(v[b, "parse_handshake-p99-µs"]), "", "")
    }
    if (has(b, "first-nginx-run-µs"))
      row("", "per handshake, first / cached (one at a time, schedstat): CPU of nginx'"'"'s workers; CPU of the sidecar; time both waited for a CPU once woken",
          fmt(v[b, "first-nginx-run-µs"]) " / " fmt(v[b, "cached-nginx-run-µs"]) " µs; " fmt(v[b, "first-sidecar-run-µs"]) " / " fmt(v[b, "cached-sidecar-run-µs"]) " µs; " \
            fmt(v[b, "first-nginx-wait-µs"] + v[b, "first-sidecar-wait-µs"]) " / " fmt(v[b, "cached-nginx-wait-µs"] + v[b, "cached-sidecar-wait-µs"]) " µs", "", "")
  }
  if (has(b, "start-cold-ms")) {
    s = v[b, "start-cold-ms"]
    what = "**" names " certificates**: `certserver serve` as its own process on that store"
    row(what, "start until the endpoint answers, store files not cached / cached", "**" fmt(s / 1000) " s** / " fmt(v[b, "start-ms"] / 1000) " s", "≤ 2 s", verdict(s <= 2000, fmt(s / 1000 - 2) " s"))
    m = v[b, "rss-MB"]
    row("", "VmRSS after warm-up / after the lookups", fmt(v[b, "rss-warm-MB"]) " / **" fmt(m) " MB** (anonymous " fmt(v[b, "rss-anon-MB"]) ", file-backed " fmt(v[b, "rss-file-MB"]) ")",
        "≤ 256 MB", verdict(m <= 256, fmt(m - 256) " MB, in file-backed pages of the mmapped store (anonymous alone: " fmt(v[b, "rss-anon-MB"]) " MB)"))
    if (has(b, "store-bytes/name"))
      row("", "store on disk per name (certificate and domain record; the data set'"'"'s leaf is bigger than a real one)", fmt(v[b, "store-bytes/name"]) " bytes", "", "")
    p = v[b, "lookup-p99-µs"]
    row("", "endpoint latency p50 / p99 at " count(rate) " lookups/s (unix socket)", ms(v[b, "lookup-p50-µs"]) " / **" ms(p) "**", "p99 ≤ 1 ms", verdict(p <= 1000, ms(p - 1000)))
    row("", "endpoint lookups/s, 4 clients saturating the CPUs; their p99", fmt(v[b, "lookups/s"]) "/s; " ms(v[b, "sat-p99-µs"]), "", "")
    row("", "sidecar CPU per lookup; first inventory of the store (48 s before it read every record in one pass)", fmt(v[b, "sidecar-cpu-µs/lookup"]) " µs; " fmt(v[b, "inventory-s"]) " s", "", "")
    if (has(b, "lookup-one-p50-µs"))
      row("", "one lookup every 2 ms from one client, the sidecar idle in between (as nginx'"'"'s first handshakes ask): p50 / p99; sidecar CPU, its threads put on a CPU, per lookup",
          ms(v[b, "lookup-one-p50-µs"]) " / " ms(v[b, "lookup-one-p99-µs"]) "; " fmt(v[b, "lookup-one-sidecar-run-µs"]) " µs, " fmt(v[b, "lookup-one-sidecar-switches"]), "", "")
  }
  b = "BenchmarkMillionCgroup"
  if (has(b, "oom-kills")) {
    k = v[b, "oom-kills"]; p = v[b, "hot-p99-µs"]
    row("**" names " certificates in a " sprintf("%d", v[b, "cg-limit-MiB"]) " MiB memory cgroup** (cgroup v" sprintf("%d", v[b, "cgroup-version"]) ", which charges the store'"'"'s page cache too; issue 15): `certserver serve` on the same store",
        "OOM kills; the cgroup'"'"'s memory at the end (anonymous, page cache) / at its peak", "**" k "**; " fmt(v[b, "cg-MiB"]) " MiB (" fmt(v[b, "cg-anon-MiB"]) ", " fmt(v[b, "cg-file-MiB"]) ") / " fmt(v[b, "cg-peak-MiB"]) " MiB",
        "never killed", verdict(k == 0, k " kills"))
    row("", "endpoint p50 / p99 at " count(rate) " lookups/s over a hot set of " count(v[b, "hot-names"]) " random names (" count(v[b, "hot-warmed"]) " of them looked up once before); lookups sent, failed",
        ms(v[b, "hot-p50-µs"]) " / **" ms(p) "**; " count(v[b, "hot-lookups"]) ", " count(v[b, "hot-failed"]), "p99 ≤ 1 ms", verdict(p <= 1000 && v[b, "hot-failed"] == 0, ms(p - 1000)))
    if (has(b, "record-cache-MiB"))
      row("", "the records of the hot lookups read from the sidecar'"'"'s record cache (`[store] record_cache`, the default), and the hot lookups answered from it alone (no read of the store'"'"'s index); its size, what it held at the end",
          fmt(v[b, "hot-cache-hit-%"]) "%, " fmt(v[b, "hot-fast-%"]) "%; " fmt(v[b, "record-cache-MiB"]) " MiB, " fmt(v[b, "record-cache-used-MiB"]) " MiB", "", "")
    if (has(b, "hot-server-over-1ms"))
      row("", "hot lookups that took the endpoint itself (from the parsed request to the written answer) over 0.5 ms / over 1 ms: the rest of the p99 is waiting around it (the socket, the CPUs)",
          count(v[b, "hot-server-over-0.5ms"]) " / " count(v[b, "hot-server-over-1ms"]), "", "")
    row("", "the same over every name: cold (at once after a start with the store'"'"'s pages dropped, the first inventory reading alongside) / warm (after the rest); lookups sent, failed",
        ms(v[b, "cold-p50-µs"]) " / " ms(v[b, "cold-p99-µs"]) " (" count(v[b, "cold-lookups"]) ", " count(v[b, "cold-failed"]) "); " \
          ms(v[b, "warm-p50-µs"]) " / " ms(v[b, "warm-p99-µs"]) " (" count(v[b, "warm-lookups"]) ", " count(v[b, "warm-failed"]) ")", "", "")
    row("", "read from the disk per lookup: cold / hot / warm; the disk'"'"'s read-ahead, which a page fault in the memory-mapped store reads around the page",
        fmt(v[b, "cold-read-KB/lookup"]) " / " fmt(v[b, "hot-read-KB/lookup"]) " / " fmt(v[b, "warm-read-KB/lookup"]) " KB; " sprintf("%d", v[b, "read-ahead-KB"]) " KB", "", "")
  }
  b = "BenchmarkMillionEndpoint"
  if (has(b, "lookups/s"))
    row("", "the same lookups, endpoint in-process (CPU profile: bin/bench/endpoint-top.txt)", fmt(v[b, "lookups/s"]) "/s; p99 " ms(v[b, "sat-p99-µs"]), "", "")
  b = "BenchmarkMillionInventory"
  if (has(b, "inventory-s"))
    row("", "the inventory in-process, pages dropped from the cache / warm: time; CPU; page faults that read the disk (before the one-pass scan: 79 / 13.3 s; 60 / 16.6 s; 372,176 / 0)",
        fmt(v[b, "inventory-cold-s"]) " / " fmt(v[b, "inventory-s"]) " s; " fmt(v[b, "inventory-cold-cpu-s"]) " / " fmt(v[b, "inventory-cpu-s"]) " s; " sprintf("%d", v[b, "inventory-cold-major-faults"]) " / " sprintf("%d", v[b, "inventory-major-faults"]), "", "")
  b = "BenchmarkMillionColdLookup"
  if (has(b, "read-KB/lookup"))
    row("", "one lookup of a name nobody asked for, the store'"'"'s pages dropped from the cache (in-process, one thread at a time): read from the disk, page faults; p50 / p99",
        fmt(v[b, "read-KB/lookup"]) " KB, " fmt(v[b, "majflt/lookup"]) " faults; " ms(v[b, "cold-p50-µs"]) " / " ms(v[b, "cold-p99-µs"]), "", "")

  ndue = 0
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkDue\//) dues[++ndue] = order[k]
  for (k = 1; k <= ndue; k++) {
    b = dues[k]; size = b; sub(/^BenchmarkDue\/domains=/, "", size)
    row(k == 1 ? "**Scheduling**: `Due` finds the same 1,000 due names" : "", "among " count(size) " domains",
        fmt(v[b, "ns/op"] / 1000) " µs, " fmt(v[b, "allocs/op"]) " allocs, " fmt(v[b, "B/op"] / 1024) " KiB", "", "")
  }
  if (ndue >= 2) {
    a = v[dues[1], "ns/op"]; z = v[dues[ndue], "ns/op"]; g = z / a
    ga = v[dues[ndue], "allocs/op"] / v[dues[1], "allocs/op"]
    row("", "growth with the store, time / allocs", "**" fmt(g) "×** / " fmt(ga) "×", "≈ 1× (≤ 2×): grows with the due set", verdict(g <= 2 && ga <= 2, fmt(g) "×"))
  }

  b = "BenchmarkImport"
  if (has(b, "certs/s")) {
    t = v[b, "import-s"]; r = v[b, "certs/s"]
    row("**Migration**: `certserver import` of " count(imports) " certbot lineages into `certserver serve` (Badger on disk, synced commits), both processes on these CPUs",
        "whole command; certificates/s", "**" fmt(t) " s**; **" fmt(r) "/s**", "< 60 s; ≥ 10,000/s", verdict(r >= 10000 && t < 60 * imports / 500000, fmt(10000 - r) "/s"))
    row("", "peak memory: command / sidecar VmHWM (anonymous, file-backed)",
        fmt(v[b, "cli-rss-MB"]) " MB / " fmt(v[b, "sidecar-rss-MB"]) " MB (" fmt(v[b, "sidecar-anon-MB"]) ", " fmt(v[b, "sidecar-file-MB"]) ")", "constant", "")
    c = v[b, "cli-cpu-µs/cert"] + v[b, "sidecar-cpu-µs/cert"]
    # The CPU a certificate costs hardly depends on the other jobs of a
    # shared machine, which the time above does: this is the figure to
    # compare between runs.
    row("", "CPU per certificate: command / sidecar; the rate 2 idle CPUs allow (load average " load ")",
        fmt(v[b, "cli-cpu-µs/cert"]) " / " fmt(v[b, "sidecar-cpu-µs/cert"]) " µs; **" fmt(2e6 / c) "/s**", "≤ 200 µs together; ≥ 10,000/s",
        verdict(c <= 200, fmt(c - 200) " µs"))
    row("", "the same tree again (every certificate unchanged)", fmt(v[b, "again-s"]) " s", "", "")
  }

  b = "BenchmarkBulkAdd500k/new"
  if (has(b, "names/s")) {
    t = v[b, "ns/op"] / 1e9
    row("**Bulk enrollment**: " count(bulk) " names in one `POST /v1/domains`, synced commits", "new names", "**" fmt(t) " s** (" fmt(v[b, "names/s"]) " names/s)", "≤ 10 s", verdict(t <= 10, fmt(t - 10) " s"))
    e = "BenchmarkBulkAdd500k/existing"
    if (has(e, "names/s")) row("", "the same names again (all existing)", fmt(v[e, "ns/op"] / 1e9) " s", "", "")
  }
  b = "BenchmarkBulkAdd500kPostgres/new"
  if (has(b, "names/s")) {
    t = v[b, "ns/op"] / 1e9
    row("**Bulk enrollment, fleet**: " count(bulk) " names in one `POST /v1/domains` into PostgreSQL (a cluster of the test'"'"'s own, fsync off)", "new names", "**" fmt(t) " s** (" fmt(v[b, "names/s"]) " names/s)", "≤ 10 s", verdict(t <= 10, fmt(t - 10) " s"))
    e = "BenchmarkBulkAdd500kPostgres/existing"
    if (has(e, "names/s")) row("", "the same names again (all existing)", fmt(v[e, "ns/op"] / 1e9) " s", "", "")
  }

  b = "BenchmarkJoin"
  if (has(b, "join-s")) {
    t = v[b, "join-s"]; r = v[b, "certs/s"]
    # At 1,000,000 the time itself is judged; a smaller run (--short)
    # only shows its rate, which falls as the copy grows.
    if (join + 0 >= 1000000) { what = "until ready; certificates/s"; val = "**" fmt(t) " s**; " fmt(r) "/s"; est = t }
    else { what = "until ready; certificates/s (the rate falls as the copy grows)"; val = fmt(t) " s; " fmt(r) "/s"; est = 1000000 / r }
    row("**Fleet join**: a new host copies " count(join) " certificates from PostgreSQL into its empty Badger (synced commits) until ready",
        what, val, "≤ 60 s at 1,000,000", verdict(est <= 60, fmt(est - 60) " s"))
    c = v[b, "cpu-µs/cert"] + v[b, "pg-cpu-µs/cert"]
    row("", "CPU per certificate: follower (Badger copy, pgx) / PostgreSQL; the rate 2 idle CPUs allow",
        fmt(v[b, "cpu-µs/cert"]) " / " fmt(v[b, "pg-cpu-µs/cert"]) " µs; " fmt(2e6 / c) "/s", "", "")
  }

  for (k = 1; k <= nengines; k++) {
    e = engines[k]
    row(k == 1 ? "Supporting: the store contract suite'"'"'s bulk case, one `AddDomains` then its checks (no race detector)" : "",
        e ", " count(bulk_n[e]) " names", fmt(bulk_s[e]) " s (" fmt(bulk_n[e] / bulk_s[e]) " names/s)", "", "")
  }

  first = 1
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkIssuance\//) {
    b = order[k]; w = b; sub(/^BenchmarkIssuance\//, "", w)
    row(first ? "**Issuance** from a local Pebble, HTTP-01 through nginx" : "", w, fmt(v[b, "certs/s"]) " certificates/s", "", "")
    first = 0
  }

  first = 1
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkChallenge\//) {
    b = order[k]; w = b; sub(/^BenchmarkChallenge\/challenge=/, "", w)
    row(first ? "**Time per certificate by challenge**, one worker, a local Pebble resolving through BIND 9" : "", w, fmt(v[b, "s/cert"]) " s", "", "")
    first = 0
  }

  b = "BenchmarkZoneTXT"
  if (has(b, "answers/s")) {
    r = v[b, "answers/s"]
    row("**DNS-01 zone**: TXT answers over UDP from certserver'"'"'s own zone (two values under one label, Badger store), " sprintf("%d", v[b, "clients"]) " clients in another process on the same CPUs",
        "answers/s; p50 / p99 under that load", "**" fmt(r) "/s**; " ms(v[b, "p50-µs"]) " / " ms(v[b, "p99-µs"]), "≥ 50,000/s", verdict(r >= 50000, fmt(50000 - r) "/s"))
    row("", "CPU per answer: server / clients (a process of their own); the rate the server'"'"'s CPU allows on 2 idle CPUs",
        fmt(v[b, "server-cpu-µs/answer"]) " / " fmt(v[b, "client-cpu-µs/answer"]) " µs; " fmt(v[b, "idle-2cpu-answers/s"]) "/s", "", "")
  }

  b = "BenchmarkFleetConvergence"
  if (has(b, "p99-ms")) {
    p = v[b, "p99-ms"]
    row("**Fleet**: a certificate written on one of 3 hosts (import through its admin API) until every worker of every nginx serves it, one PostgreSQL",
        "p50 / p99 / slowest over " count(v[b, "changes"]) " changes", fmt(v[b, "p50-ms"]) " / **" fmt(p) "** / " fmt(v[b, "max-ms"]) " ms", "p99 ≤ 2 s", verdict(p <= 2000, fmt(p - 2000) " ms"))
  }

  b1 = "BenchmarkFleetIssuance/hosts=1"; b3 = "BenchmarkFleetIssuance/hosts=3"
  if (has(b1, "certs/s") && has(b3, "certs/s")) {
    r = v[b3, "certs/s"] / v[b1, "certs/s"]
    row("**Fleet issuance** from a local Pebble, HTTP-01 validations reaching every host: 3 hosts (4 renewer workers each, the work split by leases) vs 1 host (12 workers), one PostgreSQL",
        "certificates/s, 3 hosts / 1 host", fmt(v[b3, "certs/s"]) " / " fmt(v[b1, "certs/s"]) " = **" fmt(r) "**", "", "")
  }

  first = 1
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkCertEndpoint\//) {
    b = order[k]; via = b; sub(/^BenchmarkCertEndpoint\//, "", via)
    label = (via == "handler") ? "handler and store, no network" : "over " via
    val = fmt(v[b, "lookups/s"]) " lookups/s"
    if (has(b, "p99-µs")) val = val ", p99 " ms(v[b, "p99-µs"])
    row(first ? "Supporting: certificate endpoint in-process, 100,000 certificates" : "", label, val, "", "")
    first = 0
  }
  # Printed whether or not BenchmarkCertEndpointSealed ran: a missing
  # figure says so (reading v first would make it 0 and the row "met").
  b1 = "BenchmarkCertEndpointSealed/plain"; b2 = "BenchmarkCertEndpointSealed/sealed"
  ok = has(b1, "p99-µs") && has(b2, "p99-µs")
  p1 = has(b1, "p99-µs") ? v[b1, "p99-µs"] : 0; p2 = has(b2, "p99-µs") ? v[b2, "p99-µs"] : 0
  row("**Fleet host'"'"'s certificate endpoint**: lookups from the local Badger copy with keys sealed, as a fleet host reads them, against plain keys as a single host (handler and store, 20,000 certificates)",
      "p99 single host / fleet host", (has(b1, "p99-µs") ? ms(p1) : "missing") " / **" (has(b2, "p99-µs") ? ms(p2) : "missing") "**",
      "unchanged (≤ 1.25 × single host + 10 µs)", judge(ok, p2 <= 1.25 * p1 + 10, ms(p2 - 1.25 * p1 - 10)))
  first = 1
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkLookupCertificate\//) {
    b = order[k]; kind = b; sub(/^BenchmarkLookupCertificate\//, "", kind)
    row(first ? "Supporting: store `LookupCertificate`, " count(certs) " certificates" : "", kind, fmt(v[b, "ns/op"] / 1000) " µs, " fmt(v[b, "allocs/op"]) " allocs", "", "")
    first = 0
  }
  b = "BenchmarkStoreSize/format=v2"
  if (has(b, "bytes/cert")) {
    s2 = v[b, "bytes/cert"]
    row("**Store size**: Badger directory after " count(sizecerts) " ECDSA P-256 certificates of one intermediate (Let'"'"'s Encrypt-sized chain and key), closed",
        "bytes per certificate, formatV2", "**" fmt(s2) "**", "≤ 1,600", verdict(s2 <= 1600, fmt(s2 - 1600) " bytes"))
    row("", "bytes per certificate, formatV1 (before) / formatV1 upgraded in place at start (before the value-log GC)",
        fmt(v["BenchmarkStoreSize/format=v1", "bytes/cert"]) " / " fmt(v["BenchmarkStoreSize/format=v1-upgraded", "bytes/cert"]), "", "")
  }
  first = 1
  for (k = 1; k <= n; k++) if (order[k] ~ /^BenchmarkAddDomains\//) {
    b = order[k]; what = b; sub(/^BenchmarkAddDomains\//, "", what)
    row(first ? "Supporting: store `AddDomains` in one call" : "", what, fmt(v[b, "domains/s"]) " domains/s", "", "")
    first = 0
  }

  b = "BenchmarkPostgresAddDomains/domains=" pgadd
  if (has(b, "domains/s")) {
    t = v[b, "ns/op"] / 1e9
    row("**Fleet store**: PostgreSQL `AddDomains` of " count(pgadd) " names in one call (the store'"'"'s part of a `POST /v1/domains`)",
        "time; CPU of certserver / of PostgreSQL", "**" fmt(t) " s**; " fmt(v[b, "client-cpu-s/op"]) " s / " fmt(v[b, "server-cpu-s/op"]) " s",
        "≤ 5 s (half the POST'"'"'s 10 s)", verdict(t <= 5, fmt(t - 5) " s"))
  }
  b = "BenchmarkPostgresChangesAfter/certs=" pgchanges
  if (has(b, "changes/s"))
    row("", "a joining host'"'"'s copy: `ChangesAfter` of " count(pgchanges) " certificates in batches of 1,000; `PutCertificates` that wrote them",
        fmt(v[b, "changes/s"]) " changes/s; " fmt(v[b, "puts/s"]) " puts/s (CPU per put " fmt(v[b, "put-client-cpu-µs"]) " µs in certserver, " fmt(v[b, "put-server-cpu-µs"]) " µs in PostgreSQL)", "", "")
  b = "BenchmarkPostgresChangesAfter/inventory/scan/certs=" pgchanges
  l = "BenchmarkPostgresChangesAfter/inventory/list/certs=" pgchanges
  if (all_in(b, "records/s client-cpu-µs/record server-cpu-µs/record peak-heap-MiB") && all_in(l, "records/s client-cpu-µs/record server-cpu-µs/record peak-heap-MiB")) {
    cpus = fmt(v[b, "client-cpu-µs/record"]) " / " fmt(v[l, "client-cpu-µs/record"]) " µs, " fmt(v[b, "server-cpu-µs/record"]) " / " fmt(v[l, "server-cpu-µs/record"]) " µs"
    row("", "a fleet host'"'"'s inventory of the same " count(pgchanges) " certificates: `ScanCertificates` / the `ListCertificates` pages of 5,000 it read before (chains and keys included); CPU per record in certserver, in PostgreSQL; certserver'"'"'s peak heap",
        fmt(v[b, "records/s"]) " / " fmt(v[l, "records/s"]) " records/s; " cpus "; " fmt(v[b, "peak-heap-MiB"]) " / " fmt(v[l, "peak-heap-MiB"]) " MiB", "", "")
  }
  b = "BenchmarkPostgresLatestVersion"
  if (has(b, "calls/s"))
    row("", "`LatestVersion` (each host'"'"'s lag)", fmt(v[b, "calls/s"]) " calls/s, " fmt(v[b, "ns/op"] / 1000) " µs", "", "")
  b = "BenchmarkPostgresClaimDue/claim/names=" claimnames "/due=" claimdue
  if (has(b, "claims/s")) {
    r = v[b, "claims/s"]
    row("**Fleet claims**: 3 renewing hosts claim the due names from PostgreSQL under leases, up to 4 at a time (`ClaimDue`, the names moved on, `Release`)",
        "fleet claims/s, " count(claimnames) " names, " count(claimdue) " due; one `ClaimDue` call", "**" fmt(r) "/s**; " ms(v[b, "claim-µs"]),
        "≥ 2,000/s", verdict(r >= 2000, fmt(2000 - r) "/s"))
    row("", "CPU per claim: hosts / PostgreSQL; the rate 2 idle CPUs allow",
        fmt(v[b, "host-cpu-µs/claim"]) " / " fmt(v[b, "pg-cpu-µs/claim"]) " µs; " fmt(v[b, "cpu-bound-claims/s"]) "/s", "", "")
  }
  b = "BenchmarkPostgresClaimDue/cycle/names=" claimnames "/due=" claimdue
  if (has(b, "claims/s"))
    row("", "the whole bookkeeping of a name, as renewers of 4 workers do it (claim, the outcome written under the lease, release): names/s; one fenced write; CPU-bound rate",
        fmt(v[b, "claims/s"]) "/s; " ms(v[b, "write-µs"]) "; " fmt(v[b, "cpu-bound-claims/s"]) "/s", "", "")
  b = "BenchmarkPostgresSharedReserve"
  if (has(b, "reservations/s"))
    row("", "the fleet'"'"'s rate-limit budget: reservations of a new order, four hosts at once (each one transaction locking its buckets)",
        fmt(v[b, "reservations/s"]) " reservations/s", "", "")
  if (rows == 0) { print "bench.sh: no benchmark results parsed" > "/dev/stderr"; exit 1 }
}
'
