#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a measure that other jobs on this
# shared machine do not move (the same binary and requests give the same count, give or take
# a fraction of a percent), for comparing builds and cases where req/s is too noisy.
#
# It counts the server's user-space instructions only: not the kernel's share of a request
# (loopback TCP, system calls), nor cache misses, so it is not a throughput. A difference
# between two cases is what one costs over the other in user space.
#
# Cases: bare axum `/health`; atom `/health` with ATOM_LOG=warn, the default info log, and the
# info log as JSON; `atom-bench serve`'s `/bench/public` and `/bench/protected` (access JWT).
# Usage: bench/instructions.sh   (BENCH_REQUESTS=2000 requests per case after 300 of warm-up)
#
# BENCH_CASES picks cases by name (default: all of bare warn info json public protected);
# BENCH_VALGRIND_ARGS adds options to callgrind's, such as its cache model (then the profiles
# also count L1 and last-level misses):
#   BENCH_VALGRIND_ARGS="--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64"
# BENCH_PROFILES=DIR keeps each case's callgrind output there as NAME.cg, for
# `callgrind_annotate --inclusive=no --auto=no DIR/NAME.cg` (where the instructions go).
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${BENCH_REQUESTS:-2000}
cases=" ${BENCH_CASES:-bare warn info json public protected} "
profiles=${BENCH_PROFILES:-}
read -r -a valgrind_args <<<"${BENCH_VALGRIND_ARGS:-}"
[ -z "$profiles" ] || mkdir -p "$profiles"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release -q -p atom -p atom-bench -p bare-axum
target=${CARGO_TARGET_DIR:-target}/release

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# $1: port, $2: path, $3: count, $4: bearer token or empty. Sequential keep-alive requests.
client() {
  python3 - "$@" <<'PY'
import http.client, sys
port, path, n, token = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
headers = {"Authorization": "Bearer " + token} if token else {}
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"{path}: HTTP {r.status}")
PY
}

# $1: case name, $2: label, $3: path, $4: server (bare, atom-warn, atom-info, atom-json,
# atom-bench).
measure() {
  local name=$1 label=$2 path=$3 server=$4 port token=""
  [[ $cases == *" $name "* ]] || return 0
  port=$(free_port)
  rm -rf "$tmp/data" "$tmp"/cg.out* && mkdir -p "$tmp/data"
  # The environment goes before valgrind: it follows no exec, so the server must be its child.
  local vars=() cmd
  case $server in
    bare) cmd=("$target/bare-axum" "127.0.0.1:$port") ;;
    atom-bench)
      vars=(ATOM_LOG=warn "${limits[@]}")
      cmd=("$target/atom-bench" serve "127.0.0.1:$port" "$tmp/data")
      ;;
    atom-*)
      local level=info format=pretty
      [ "$server" = atom-warn ] && level=warn
      [ "$server" = atom-json ] && format=json
      vars=(ATOM_LISTEN="127.0.0.1:$port" ATOM_LOG=$level ATOM_LOG_FORMAT=$format)
      cmd=("$target/atom" serve)
      ;;
  esac
  env -u ATOM_CONFIG -u ATOM_DATABASE_URL -u ATOM_REDIS_URL -u ATOM_LOG_FORMAT ATOM_DATA_DIR="$tmp/data" "${vars[@]}" \
    valgrind --tool=callgrind "${valgrind_args[@]}" --callgrind-out-file="$tmp/cg.out" "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" &
  server_pid=$!
  for _ in $(seq 600); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ "$path" = /bench/protected ] && token=$(head -1 "$tmp/out")
  client "$port" "$path" 300 "$token"
  callgrind_control -z "$server_pid" >/dev/null 2>&1
  client "$port" "$path" "$requests" "$token"
  sleep 1 # the log writer thread's share
  callgrind_control -d "$server_pid" >/dev/null 2>&1
  local total profile
  profile=$(ls -t "$tmp"/cg.out* | head -1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$profile")
  [ -z "$profiles" ] || cp "$profile" "$profiles/$name.cg"
  kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=""
  echo "| $label | $((total / requests)) |"
}

limits=(ATOM_RATE_LIMIT_API_PER_MINUTE=1000000000 ATOM_RATE_LIMIT_API_BURST=1000000
  ATOM_RATE_LIMIT_ANONYMOUS_PER_MINUTE=1000000000 ATOM_RATE_LIMIT_ANONYMOUS_BURST=1000000)

echo "Run: \`bench/instructions.sh\` on $(date -u +%Y-%m-%d), commit \`$(git rev-parse --short HEAD)\`, $requests requests per case."
echo
echo "| case | instructions per request |"
echo "| --- | ---: |"
measure bare "bare axum \`/health\`" /health bare
measure warn "atom \`/health\`, \`ATOM_LOG=warn\`" /health atom-warn
measure info "atom \`/health\`, info log (default)" /health atom-info
measure json "atom \`/health\`, info log as JSON" /health atom-json
measure public "atom-bench \`/bench/public\`" /bench/public atom-bench
measure protected "atom-bench \`/bench/protected\` (access JWT)" /bench/protected atom-bench
