#!/usr/bin/env bash
# Conversations over Socket.io on both backends: messages per second sent (stored and
# acknowledged) and delivered in 100 two-member conversations, p50/p99 from send to delivery,
# and the time for one client to replay 10,000 missed messages (bench/conversations.mjs,
# the official socket.io-client from tests/peers).
#
#   bench/conversations.sh            # BENCH_PG=postgres://postgres@127.0.0.1:5432
#
# Knobs: BENCH_CONVERSATIONS (100), BENCH_MESSAGES per conversation (100), BENCH_WINDOW
# (unacknowledged sends per sender, 8), BENCH_REPLAY (10000), BENCH_PIN (1: the server on
# CPU 0, the clients on CPU 1). Prints one JSON line per backend.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
pin=${BENCH_PIN:-1}
(cd tests/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
cargo build --release -q -p atom
tmp=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_conv WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

run_backend() { # $1: sqlite|postgres
  local kind=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  unset ATOM_DATABASE_URL
  if [ "$kind" = postgres ]; then
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_conv WITH (FORCE)" -c "CREATE DATABASE atom_bench_conv" >/dev/null
    export ATOM_DATABASE_URL=$pg/atom_bench_conv
  fi
  local server_cpu="" client_cpu=""
  if [ "$pin" = 1 ]; then server_cpu="taskset -c 0"; client_cpu="taskset -c 1"; fi
  ATOM_LISTEN=127.0.0.1:$port ATOM_DATA_DIR=$tmp/$kind ATOM_LOG=warn ATOM_AUTH_REGISTRATION=open \
    ATOM_RATE_LIMIT_ENABLED=false ATOM_REALTIME_MAX_CONNECTIONS_PER_ADDRESS=1000 \
    ATOM_REALTIME_EVENTS_PER_SECOND=100000 ATOM_REALTIME_EVENT_BURST=100000 \
    $server_cpu target/release/atom serve >"$tmp/$kind.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
  printf '{"backend":"%s","results":' "$kind"
  $client_cpu node bench/conversations.mjs "http://127.0.0.1:$port" | tr -d '\n'
  printf '}\n'
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

run_backend sqlite
run_backend postgres
