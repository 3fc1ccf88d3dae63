#!/usr/bin/env bash
# Socket.io at scale, atom against Node's socket.io in the same run: idle authenticated
# connections and resident memory per connection, unauthenticated handshakes, a 1 KB
# broadcast to a conversation of 5,000 sockets, a connect storm, and messages per second in
# two-member conversations (SQLite and PostgreSQL). The servers are the release `atom serve`
# and bench/socketio/node-server.mjs (npm socket.io 4.8, the same events); the load comes
# from bench/socketio/run.mjs and its client processes (the official socket.io-client).
#
#   bench/socketio.sh            # BENCH_PG=postgres://postgres@127.0.0.1:5432
#
# Knobs: BENCH_SCENARIOS (idle,pending,broadcast,storm,chat), BENCH_PG_SCENARIOS (chat: what
# runs on atom over PostgreSQL too; empty for none), BENCH_TARGETS (atom node), BENCH_PIN (1:
# servers on CPU 0, clients on CPU 1), BENCH_PROFILE (release, or debug for the binary the
# tests built), BENCH_ATOM (the atom binary to run; default target/$BENCH_PROFILE/atom) and
# BENCH_ATOM_COMMIT (the commit the report names for it), BENCH_DOC (the file whose
# bench:socketio block is rewritten; empty: none),
# and run.mjs's own (BENCH_IDLE, BENCH_PENDING, BENCH_BROADCAST, BENCH_USERS, …; see there).
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
pin=${BENCH_PIN:-1}
profile=${BENCH_PROFILE:-release}
scenarios=${BENCH_SCENARIOS:-idle,pending,broadcast,storm,chat}
pg_scenarios=${BENCH_PG_SCENARIOS-chat}
targets=${BENCH_TARGETS:-atom node}
doc=${BENCH_DOC-docs/benchmarks.md}
# How long a handshake may wait for its CONNECT, on both servers (atom's default is 10 s,
# socket.io's 45 s): long enough to hold every pending handshake while it is measured.
connect_timeout=${BENCH_CONNECT_TIMEOUT_SECS:-60}

# Every connection is an open file on both sides; 20,000 is this machine's hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(cd bench/socketio && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# BENCH_BUILD=0 runs the binary as it is (the Node reference alone needs none).
if [ "${BENCH_BUILD:-1}" = 1 ] && [ "$profile" = release ] && [[ " $targets " == *" atom "* ]]; then
  cargo build --release -q -p atom
fi
atom=${BENCH_ATOM:-target/$profile/atom}
tmp=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_sio WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

server_cpu="" client_cpu=""
if [ "$pin" = 1 ]; then server_cpu="taskset -c 0"; client_cpu="taskset -c 1"; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.2; done; echo "server did not start" >&2; exit 1; }

# The atom server with the bench's caps: every per-address and per-user cap above what the
# scenarios open, tokens that outlive the run, rate limits off, big conversations allowed.
start_atom() { # $1: sqlite|postgres, $2: port
  unset ATOM_DATABASE_URL
  if [ "$1" = postgres ]; then
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_sio WITH (FORCE)" -c "CREATE DATABASE atom_bench_sio" >/dev/null
    export ATOM_DATABASE_URL=$pg/atom_bench_sio
  fi
  ATOM_LISTEN=127.0.0.1:$2 ATOM_DATA_DIR=$(mktemp -d -p "$tmp") ATOM_LOG=warn ATOM_AUTH_REGISTRATION=open \
    ATOM_AUTH_ACCESS_TTL_SECS=7200 ATOM_RATE_LIMIT_ENABLED=false \
    ATOM_HTTP_MAX_CONNECTIONS=19990 ATOM_HTTP_MAX_CONNECTIONS_PER_IP=20000 ATOM_HTTP_MAX_IN_FLIGHT=20000 \
    ATOM_REALTIME_MAX_CONNECTIONS_PER_ADDRESS=20000 ATOM_REALTIME_MAX_CONNECTIONS_PER_USER=20000 \
    ATOM_REALTIME_CONNECT_TIMEOUT_SECS=$connect_timeout \
    ATOM_REALTIME_EVENTS_PER_SECOND=100000 ATOM_REALTIME_EVENT_BURST=100000 \
    ATOM_CONVERSATIONS_MAX_MEMBERS=100000 ATOM_CONVERSATIONS_ECHO_AGENT=false \
    $server_cpu "$atom" serve >>"$tmp/atom-$1.log" 2>&1 &
  server=$!
  wait_up "$2"
}

start_node() { # $1: port
  PORT=$1 BENCH_NODE_SECRET=$node_secret BENCH_CONNECT_TIMEOUT_MS=$((connect_timeout * 1000)) \
    $server_cpu node bench/socketio/node-server.mjs >"$tmp/node.log" 2>&1 &
  server=$!
  wait_up "$1"
}

stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

# A key for the Node reference's tokens, made for this run only.
node_secret=$(openssl rand -hex 32)
uname_cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
results=()
run() { # $1: label, $2: target (atom|node), $3: scenarios
  local port out
  port=$(free_port)
  if [ "$2" = node ]; then start_node "$port"; else start_atom "${1%%-*}" "$port"; fi
  out=$tmp/$1.json
  BENCH_NODE_SECRET=$node_secret $client_cpu node --max-old-space-size=4096 bench/socketio/run.mjs \
    --target "$2" --url "http://127.0.0.1:$port" --pid "$server" --scenarios "$3" >"$out"
  stop_server
  results+=("$1=$out")
  cat "$out"
}

# Each memory scenario starts on a fresh server (what an earlier one freed would blur its
# baseline: Node's garbage collector, for one, gives memory back only later); the others share
# one. The targets alternate, so that a busy spell of the machine lands on both.
groups=()
rest=()
for s in ${scenarios//,/ }; do
  case $s in idle|pending) groups+=("$s") ;; *) rest+=("$s") ;; esac
done
if [ ${#rest[@]} -gt 0 ]; then groups+=("$(IFS=,; echo "${rest[*]}")"); fi
for g in "${groups[@]}"; do
  for t in $targets; do
    if [ "$t" = atom ]; then run "sqlite-$g" atom "$g"; else run "node-$g" node "$g"; fi
  done
done
if [ -n "$pg_scenarios" ] && [[ " $targets " == *" atom "* ]]; then run postgres atom "$pg_scenarios"; fi

if [ -n "$doc" ]; then
  node bench/socketio/report.mjs --doc "$doc" --cpu "$uname_cpu" --loadavg-start "$loadavg_start" \
    --loadavg-end "$(cut -d' ' -f1-3 /proc/loadavg)" --commit "${BENCH_ATOM_COMMIT:-$(git rev-parse --short HEAD)}" \
    --profile "$profile" --command "${BENCH_COMMAND:-bench/socketio.sh}" "${results[@]}"
fi
