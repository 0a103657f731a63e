#!/usr/bin/env bash
# The local demo (`make demo`): real certificates for *.localhost names from
# a local ACME CA, served by nginx through certserver, on loopback only.
#
#   scripts/demo.sh           run the demo, then follow the sidecar's log
#                             until Ctrl-C
#   scripts/demo.sh --check   run it without interaction, verify every
#                             step and exit 0 (all good) or 1
#
# It starts, on fixed loopback ports (each is checked to be free first):
#   demodns    127.0.0.1:8053  (udp+tcp) DNS: every *.localhost name is loopback
#   Pebble     127.0.0.1:14000 ACME directory, 127.0.0.1:15000 management
#   certserver 127.0.0.1:9400  admin API, 127.0.0.1:9402 HTTP-01 challenges,
#                              certificates on the unix socket demo/run/certs.sock
#   nginx      127.0.0.1:8443  HTTPS, 127.0.0.1:8080 HTTP (the port Pebble
#                              validates HTTP-01 on, standing in for port 80),
#                              both also on [::1] when the host has IPv6 loopback
# adds three names with `certserver domains add`, waits until each has a
# certificate, checks them with curl against Pebble's root, and shows
# on-demand issuance for a name nobody added. Everything it writes is in
# demo/ (removed at the next start, kept after exit for inspection).
# Ctrl-C (or the end of --check) stops every process it started.
#
# Needs what scripts/deps.sh installs (it is run first), curl, and root or
# sudo for apt when packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo=$root/demo

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "demo.sh: unknown argument '$1' (the only option is --check)" >&2; exit 2 ;;
esac

dns_addr=127.0.0.1:8053
acme_addr=127.0.0.1:14000
mgmt_addr=127.0.0.1:15000
admin_addr=127.0.0.1:9400
challenge_addr=127.0.0.1:9402
zone_addr=127.0.0.1:8054
acme_zone=acme.localhost
http_port=8080
https_port=8443
names=(demo.localhost shop.localhost www.demo.localhost)
ondemand_name=anything.localhost
# One certificate for a wildcard and its apex, through certserver's own
# DNS-01 zone ($acme_zone): demodns plays the customer's DNS, with the
# _acme-challenge CNAME into that zone which `domains show` names.
wild_set=('*.wild.localhost' wild.localhost)
wild_probe=any.wild.localhost

tty=0
[ -t 1 ] && tty=1
if [ "$tty" = 1 ]; then
  say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
  die() { printf '\033[1;31mdemo: %s\033[0m\n' "$*" >&2; exit 1; }
else
  say() { printf 'demo: %s\n' "$*"; }
  die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
fi

# --- processes --------------------------------------------------------------

pids=()      # every process started, in order
pid_names=() # what each one is
tail_pid=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null || true
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping ${pid_names[*]}"
  fi
  # In reverse order of start: nginx first, DNS last.
  local i pid
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    pid=${pids[$i]}
    if kill -0 "$pid" 2>/dev/null; then
      if [ "${pid_names[$i]}" = nginx ]; then kill -QUIT "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
    fi
  done
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    pid=${pids[$i]}
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo: ${pid_names[$i]} (pid $pid) did not stop within 5s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ ${#pids[@]} -gt 0 ]; then
    say "demo/ is left for inspection (logs in demo/logs/ and demo/nginx/logs/)"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE CMD... starts a process in the background, its output
# in LOGFILE, and remembers it for cleanup.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  pid_names+=("$name")
}

# alive NAME PID LOG fails the demo when PID has exited, showing its log.
alive() {
  if ! kill -0 "$2" 2>/dev/null; then
    echo "--- last lines of $3" >&2
    tail -n 30 "$3" >&2 || true
    die "$1 exited (log: ${3#"$root"/})"
  fi
}

# wait_for WHAT SECONDS PID LOG CMD... runs CMD until it succeeds, failing
# the demo when PID dies or SECONDS pass.
wait_for() {
  local what=$1 secs=$2 pid=$3 log=$4
  shift 4
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    alive "$what" "$pid" "$log"
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "--- last lines of $log" >&2
      tail -n 30 "$log" >&2 || true
      die "$what did not come up within ${secs}s"
    fi
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- ports ------------------------------------------------------------------

# port_users PROTO PORT prints "name (pid N)" for each process with a
# listening (tcp) or bound (udp) socket on PORT, on any address, from /proc
# so that it needs neither ss nor lsof. Without root it may only say that
# the port is in use.
port_users() {
  local proto=$1 port=$2 state hex inodes inode pid found=""
  state=0A; [ "$proto" = udp ] && state=07
  hex=$(printf '%04X' "$port")
  inodes=$(awk -v hex="$hex" -v st="$state" 'FNR > 1 { n = split($2, a, ":"); if (a[n] == hex && $4 == st) print $10 }' \
    "/proc/net/$proto" "/proc/net/${proto}6" 2>/dev/null | sort -u)
  [ -n "$inodes" ] || return 1
  for inode in $inodes; do
    for pid in $(find /proc/[0-9]*/fd -lname "socket:\[$inode\]" 2>/dev/null | cut -d/ -f3 | sort -u); do
      found="$found${found:+, }$(cat "/proc/$pid/comm" 2>/dev/null || echo '?') (pid $pid)"
    done
  done
  echo "${found:-a process this user cannot see (try: sudo ss -ltnup)}"
}

check_port() {
  local proto=$1 port=$2 what=$3 users
  if users=$(port_users "$proto" "$port"); then
    die "port $port/$proto ($what) is in use by $users. Stop it (a demo still running?) and try again."
  fi
}

# --- start ------------------------------------------------------------------

command -v curl >/dev/null || die "curl is missing: apt-get install curl"
say "checking dependencies (scripts/deps.sh)"
pebble_bin=$(scripts/deps.sh)
[ -x "$pebble_bin" ] || die "scripts/deps.sh did not give a pebble binary (got '$pebble_bin')"

# demodns answers A 127.0.0.1 only, so Pebble validates over IPv4. nginx
# also listens on [::1] when the host has IPv6 loopback, for clients (curl
# resolves *.localhost to both ::1 and 127.0.0.1).
ipv6_listen_https="" ipv6_listen_http=""
if grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2>/dev/null; then
  ipv6_listen_https="listen [::1]:$https_port ssl;"
  ipv6_listen_http="listen [::1]:$http_port;"
fi

check_port udp 8053 "demodns, DNS for Pebble"
check_port tcp 8053 "demodns, DNS for Pebble"
check_port tcp 14000 "Pebble ACME directory"
check_port tcp 15000 "Pebble management API"
check_port tcp 9400 "certserver admin API"
check_port tcp 9402 "certserver HTTP-01 challenge listener"
check_port udp 8054 "certserver DNS-01 zone"
check_port tcp 8054 "certserver DNS-01 zone"
check_port tcp "$http_port" "nginx HTTP, where Pebble validates HTTP-01"
check_port tcp "$https_port" "nginx HTTPS"

rm -rf "$demo"
mkdir -p "$demo"/{bin,run,logs,pebble,nginx/logs,nginx/tmp}

say "building certserver and demodns into demo/bin"
go build -o "$demo/bin/certserver" ./cmd/certserver
go build -o "$demo/bin/demodns" ./scripts/demodns
cs=$demo/bin/certserver

say "making Pebble's HTTPS certificate (demo/pebble/cert.pem) and nginx's fallback certificate"
mkdir -p "$demo/_gen"  # "_": not a package of ./... for go vet and go test
cat >"$demo/_gen/pebblecert.go" <<'EOF'
// Writes a self-signed ECDSA certificate for 127.0.0.1 and localhost, the
// HTTPS certificate of the demo's Pebble, to cert.pem and key.pem in the
// directory given as the only argument.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := os.Args[1]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "certserver demo Pebble"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		log.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	write("cert.pem", "CERTIFICATE", der)
	write("key.pem", "PRIVATE KEY", keyDER)
}
EOF
go run "$demo/_gen/pebblecert.go" "$demo/pebble"
"$cs" fallback-cert --out "$demo" >/dev/null
head -c 32 /dev/urandom | base64 >"$demo/admin.token"
chmod 600 "$demo/admin.token"

# --- demodns ----------------------------------------------------------------

say "starting demodns on $dns_addr (*.localhost -> 127.0.0.1; $acme_zone -> certserver's zone on $zone_addr)"
start demodns "$demo/logs/demodns.log" "$demo/bin/demodns" -listen "$dns_addr" -zone localhost -delegate "$acme_zone=$zone_addr"
dns_pid=${pids[-1]}
wait_for demodns 10 "$dns_pid" "$demo/logs/demodns.log" tcp_open 127.0.0.1 8053

# --- nginx ------------------------------------------------------------------

# The project's snippets: certserver-ssl.conf and certserver-acme.conf by
# path; certserver-http.conf copied with its three installation-specific
# values replaced (as nginx/nginxtest does for the tests).
http_snippet=$demo/nginx/certserver-http.conf
snippet=$(<nginx/certserver-http.conf)
for pair in \
  "\"/usr/share/certserver/lua/?.lua;;\"|\"$root/lua/?.lua;;\"" \
  "\"unix:/run/certserver/certs.sock\"|\"unix:$demo/run/certs.sock\"" \
  "server 127.0.0.1:9402;|server $challenge_addr;"; do
  old=${pair%%|*} new=${pair#*|}
  n=$(grep -cF -- "$old" nginx/certserver-http.conf || true)
  [ "$n" = 1 ] || die "nginx/certserver-http.conf holds '$old' $n times, want once; update demo.sh with the snippet"
  snippet=${snippet/"$old"/"$new"}
done
printf '%s\n' "$snippet" >"$http_snippet"

user_line=""
# Workers run as nobody otherwise, who cannot reach the socket under this
# checkout (often in /root). A demo only.
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$demo/nginx/nginx.conf" <<EOF
# The demo's nginx: generated by scripts/demo.sh.
daemon off;
master_process on;
worker_processes 2;
$user_line
pid $demo/nginx/logs/nginx.pid;
error_log $demo/nginx/logs/error.log notice;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
events { worker_connections 1024; }
http {
    access_log $demo/nginx/logs/access.log;
    client_body_temp_path $demo/nginx/tmp/client_body;
    proxy_temp_path $demo/nginx/tmp/proxy;
    fastcgi_temp_path $demo/nginx/tmp/fastcgi;
    uwsgi_temp_path $demo/nginx/tmp/uwsgi;
    scgi_temp_path $demo/nginx/tmp/scgi;

    include $http_snippet;

    server {
        listen 127.0.0.1:$https_port ssl;
        $ipv6_listen_https
        server_name _;
        ssl_certificate     $demo/fallback.crt;
        ssl_certificate_key $demo/fallback.key;
        include $root/nginx/certserver-ssl.conf;
        location / {
            default_type text/plain;
            return 200 "hello from \$ssl_server_name, certificate by certserver\n";
        }
    }

    server {
        listen 127.0.0.1:$http_port;
        $ipv6_listen_http
        include $root/nginx/certserver-acme.conf;
        location / { return 301 https://\$host:$https_port\$request_uri; }
    }
}
EOF
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
"$nginx_bin" -t -q -p "$demo/nginx/" -c "$demo/nginx/nginx.conf" -e "$demo/nginx/logs/error.log" \
  || die "nginx -t refused demo/nginx/nginx.conf (see above)"
say "starting nginx: https://*.localhost:$https_port, http on :$http_port"
start nginx "$demo/logs/nginx.log" "$nginx_bin" -p "$demo/nginx/" -c "$demo/nginx/nginx.conf" -e "$demo/nginx/logs/error.log"
nginx_pid=${pids[-1]}
wait_for nginx 10 "$nginx_pid" "$demo/nginx/logs/error.log" tcp_open 127.0.0.1 "$https_port"

# --- Pebble -----------------------------------------------------------------

cat >"$demo/pebble/pebble-config.json" <<EOF
{
  "pebble": {
    "listenAddress": "$acme_addr",
    "managementListenAddress": "$mgmt_addr",
    "certificate": "$demo/pebble/cert.pem",
    "privateKey": "$demo/pebble/key.pem",
    "httpPort": $http_port,
    "tlsPort": 5001,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "domainBlocklist": [],
    "retryAfter": { "authz": 1, "order": 1 },
    "keyAlgorithm": "ecdsa",
    "profiles": {
      "default": { "description": "90-day certificates", "validityPeriod": 7776000 }
    }
  }
}
EOF
say "starting Pebble: https://$acme_addr/dir (validates HTTP-01 on :$http_port, DNS from $dns_addr)"
start pebble "$demo/logs/pebble.log" env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  "$pebble_bin" -config "$demo/pebble/pebble-config.json" -dnsserver "$dns_addr"
pebble_pid=${pids[-1]}
wait_for Pebble 30 "$pebble_pid" "$demo/logs/pebble.log" \
  curl -sf --cacert "$demo/pebble/cert.pem" "https://$acme_addr/dir"

# --- certserver -------------------------------------------------------------

cat >"$demo/certserver.toml" <<EOF
# The demo's sidecar: generated by scripts/demo.sh. deploy/certserver.toml
# documents every key.
[store]
path = "$demo/store"

[certs]
socket = "$demo/run/certs.sock"
# Short, so that a name issued on demand is served a second after it is.
max_age = "1m"
min_age = "1s"
not_found_max_age = "1s"

[admin]
listen = "$admin_addr"
token_file = "$demo/admin.token"

[challenge]
listen = "$challenge_addr"

[acme]
directory = "https://$acme_addr/dir"
agree_terms = true
ca_roots = "$demo/pebble/cert.pem"
profile = "default"

[renewer]
idle_wait = "5s"

# DNS-01 through certserver's own zone: a wildcard always uses dns-01.
# demodns stands in for the resolvers (and for the customers' DNS).
[dns01]
resolvers = ["$dns_addr"]
check_authoritative = false
propagation_timeout = "30s"
polling_interval = "1s"

[dns01.zone]
name = "$acme_zone"
listen = "$zone_addr"

# On demand: a handshake for a name nobody added gets a certificate when
# the name's DNS points here (preflight.targets). demodns says
# every *.localhost name does. (allow = ["*.localhost"] would read better,
# but certserver refuses wildcards that cover a top-level domain.)
[on_demand]
enabled = true
resolvers = ["$dns_addr"]

# Before every order, check DNS (and CAA) as the CA will, asking demodns;
# the name must point here (the on-demand check reads the same list).
[preflight]
targets = ["127.0.0.1"]
resolvers = ["$dns_addr"]

[log]
level = "info"
EOF
say "starting certserver serve --config demo/certserver.toml"
start certserver "$demo/logs/certserver.log" env -u CERTSERVER_ADMIN_TOKEN "$cs" serve --config "$demo/certserver.toml"
cs_pid=${pids[-1]}
wait_for certserver 15 "$cs_pid" "$demo/logs/certserver.log" \
  bash -c "[ -S '$demo/run/certs.sock' ] && curl -sf http://$admin_addr/healthz"

export CERTSERVER_ADMIN=http://$admin_addr CERTSERVER_ADMIN_TOKEN_FILE=$demo/admin.token
unset CERTSERVER_ADMIN_TOKEN

# --- the main job -----------------------------------------------------------

say "certserver domains add ${names[*]}"
"$cs" domains add "${names[@]}"
say "certserver domains add '${wild_set[0]}' ${wild_set[1]}   (one certificate for both, over DNS-01)"
"$cs" domains add "${wild_set[@]}"

# state NAME prints the name's state from `domains show --json`.
state() {
  "$cs" domains show "$1" --json 2>/dev/null \
    | sed -n 's/.*"state"[[:space:]]*:[[:space:]]*"\([a-z_-]*\)".*/\1/p' | head -n 1
}
# One progress line, rewritten in place on a terminal; elsewhere (--check
# in CI) a line whenever a state changes.
start_wait=$(date +%s)
shown=""
while :; do
  line="" done_all=1
  for n in "${names[@]}" "${wild_set[0]}"; do
    s=$(state "$n"); s=${s:-unknown}
    line="$line $n=$s"
    [ "$s" = valid ] || done_all=0
    if [ "$s" = failing ]; then
      printf '\n'
      "$cs" domains show "$n" >&2 || true
      die "$n failed (logs: demo/logs/certserver.log, demo/logs/pebble.log)"
    fi
  done
  waited=$(( $(date +%s) - start_wait ))
  if [ "$tty" = 1 ]; then
    printf '\r\033[Kdemo: waiting for certificates (%ss):%s' "$waited" "$line"
  elif [ "$line" != "$shown" ]; then
    printf 'demo: waiting for certificates (%ss):%s\n' "$waited" "$line"
  fi
  shown=$line
  [ "$done_all" = 1 ] && break
  alive certserver "$cs_pid" "$demo/logs/certserver.log"
  [ "$waited" -lt 90 ] || { printf '\n'; die "not every name was valid within 90s"; }
  sleep 0.5
done
[ "$tty" = 1 ] && printf '\n'
say "every name has its certificate, after ${waited}s"

curl -sf --cacert "$demo/pebble/cert.pem" "https://$mgmt_addr/roots/0" >"$demo/pebble-root.pem" \
  || die "cannot fetch Pebble's root from https://$mgmt_addr/roots/0"
say "Pebble's root (what its certificates chain to) is in demo/pebble-root.pem"

failures=0
# run_curl NAME runs the printed curl command; its output follows.
run_curl() {
  printf '\n  $ curl --cacert demo/pebble-root.pem https://%s:%s/\n' "$1" "$https_port"
  curl -sS --max-time 10 --cacert "$demo/pebble-root.pem" "https://$1:$https_port/" 2>&1 | sed 's/^/  /'
  return "${PIPESTATUS[0]}"
}
printf '\n'
say "the record the owner of wild.localhost creates once (demodns serves it):"
"$cs" domains show "${wild_set[0]}" | grep -i 'dns-01' | sed 's/^/  /'
for n in "${names[@]}" "${wild_set[1]}" "$wild_probe"; do
  if ! run_curl "$n"; then
    failures=$((failures + 1))
    echo "  ^ FAILED: $n should verify against Pebble's root"
  fi
done

printf '\n'
say "on demand: nobody added $ondemand_name; its DNS points here, so [on_demand] lets a handshake ask for it"
# curl exits 60 when the server's certificate does not verify.
rc=0
run_curl "$ondemand_name" || rc=$?
if [ "$rc" = 60 ]; then
  echo "  ^ as expected: the first handshake gets nginx's fallback certificate, and certserver orders one"
else
  failures=$((failures + 1))
  echo "  ^ UNEXPECTED (curl exit $rc): the first request should get nginx's fallback certificate and fail verification"
fi
od_start=$(date +%s)
ok=0
for _ in $(seq 40); do
  sleep 0.5
  if curl -sf --max-time 10 --cacert "$demo/pebble-root.pem" "https://$ondemand_name:$https_port/" >/dev/null 2>&1; then
    ok=1
    break
  fi
done
if [ "$ok" = 1 ]; then
  run_curl "$ondemand_name" || failures=$((failures + 1))
  echo "  ^ $(( $(date +%s) - od_start ))s later it has its own certificate"
else
  failures=$((failures + 1))
  echo "  FAILED: $ondemand_name had no certificate 20s after the first request"
fi

# nginx was never reloaded.
if grep -q ': reconfiguring' "$demo/nginx/logs/error.log"; then
  failures=$((failures + 1))
  echo "FAILED: nginx was reloaded" >&2
fi
if grep -E '\[(alert|crit|emerg)\]|runtime error|lua entry thread aborted' "$demo/nginx/logs/error.log" >&2; then
  failures=$((failures + 1))
  echo "FAILED: the nginx error log has the errors above" >&2
fi

if [ "$check" = 1 ]; then
  if [ "$failures" -gt 0 ]; then
    die "--check: $failures check(s) failed"
  fi
  say "--check: everything works"
  exit 0
fi

cat <<EOF

$(say "running. Try it yourself (in another terminal, from $root):")

  curl --cacert demo/pebble-root.pem https://shop.localhost:$https_port/
  curl --cacert demo/pebble-root.pem https://\$RANDOM.wild.localhost:$https_port/   # the wildcard, issued over DNS-01
  curl --cacert demo/pebble-root.pem https://\$RANDOM.localhost:$https_port/   # fails once, works a second later

  export CERTSERVER_ADMIN=http://$admin_addr CERTSERVER_ADMIN_TOKEN_FILE=demo/admin.token
  demo/bin/certserver domains ls
  demo/bin/certserver domains show shop.localhost
  demo/bin/certserver domains add blog.localhost

Following the sidecar's log (demo/logs/certserver.log); Ctrl-C stops everything.

EOF
tail -n 0 -F "$demo/logs/certserver.log" &
tail_pid=$!
while kill -0 "$cs_pid" 2>/dev/null && kill -0 "$nginx_pid" 2>/dev/null && kill -0 "$pebble_pid" 2>/dev/null; do
  sleep 1
done
die "a process of the demo exited on its own; see demo/logs/"
