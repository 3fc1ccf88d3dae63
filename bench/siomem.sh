#!/usr/bin/env bash
# Resident memory per idle Socket.io connection of `atom serve`, authenticated and not
# (bench/siomem.mjs, the official socket.io-client from tests/peers), on SQLite.
#
#   bench/siomem.sh [COUNT]              # COUNT connections per mode, default 5000
#
# Knobs: BENCH_BIN (default target/release/atom, built here; point it at another build to
# compare two), MODES ("auth unauth"), USERS (accounts sharing the connections, 20),
# MALLOC_ARENA_MAX and other environment the server should see are passed through.
# Prints one JSON line per mode. The client needs one file per connection: COUNT up to
# about 19,900 under a 20,000 limit.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5000}
modes=${MODES:-auth unauth}
bin=${BENCH_BIN:-target/release/atom}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(cd tests/peers && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >/dev/null)
[ -n "${BENCH_BIN:-}" ] || cargo build --release -q -p atom
tmp=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

for mode in $modes; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Caps raised for the bench only: 8 client addresses, one server, a connect timeout long
  # enough to measure unauthenticated sessions before they are closed.
  ATOM_LISTEN=127.0.0.1:$port ATOM_DATA_DIR=$tmp/$mode ATOM_LOG=warn ATOM_AUTH_REGISTRATION=open \
    ATOM_RATE_LIMIT_ENABLED=false ATOM_HTTP_MAX_CONNECTIONS=30000 ATOM_HTTP_MAX_CONNECTIONS_PER_IP=30000 \
    ATOM_REALTIME_MAX_CONNECTIONS_PER_ADDRESS=30000 ATOM_REALTIME_MAX_CONNECTIONS_PER_USER=30000 \
    ATOM_REALTIME_CONNECT_TIMEOUT_SECS=300 \
    "$bin" serve >"$tmp/$mode.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null || { cat "$tmp/$mode.log" >&2; exit 1; }
  node bench/siomem.mjs "http://127.0.0.1:$port" "$server" "$mode" "$count"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
