#!/usr/bin/env bash
# The thousand-caller refresh against the real OAuth peer (oidc-provider, tests/peers): one
# connection's access token is due and BENCH_CALLERS callers ask for it at once, on one atom
# node and on two nodes sharing one PostgreSQL database. Per round, the token requests the
# provider saw (must be 1) and the time until every caller had its answer; against it, the
# provider's own round trip (a refresh grant sent straight to the peer, in the same run).
# Then the agent's token read (GET /v1/connections/{id}/token), one call at a time: a due
# token's first read, and fresh reads against the connection's metadata read (see
# bench/refresh.mjs).
#
#   bench/refresh.sh            # BENCH_PG=postgres://postgres@127.0.0.1:5432
#
# Knobs: BENCH_CALLERS (1000), BENCH_ROUNDS (5), BENCH_DIRECT (20), BENCH_TOKEN_DELAY_MS (0: a
# delay the peer adds to every token answer, to stand for a distant provider), BENCH_PROFILE
# (release; `debug` runs target/debug/atom as the tests built it, without a release build),
# BENCH_TOKEN_READS (200). Prints one JSON line per case, and the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
db=atom_bench_refresh
(cd tests/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
profile=${BENCH_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p atom; fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The peer: the code exchange's access token is due at once, refreshed ones last an hour.
PEER_CONFIG='{"redirect_uri":"http://atom.bench/v1/connections/callback","first_access_ttl":1,"access_ttl":3600}' \
  node tests/peers/oauth-server.mjs >"$tmp/peer.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 100); do grep -q issuer "$tmp/peer.out" 2>/dev/null && break; sleep 0.1; done
issuer=$(tail -1 "$tmp/peer.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
curl -sf -X POST -H 'content-type: application/json' -d "{\"token_ms\": ${BENCH_TOKEN_DELAY_MS:-0}}" \
  "$issuer/__test/delay" >/dev/null

mkdir -p "$tmp/providers"
cat >"$tmp/providers/peer.toml" <<TOML
id = "peer"
name = "OAuth peer"
auth_mode = "oauth2_authorization_code"

[oauth2]
authorization_url = "$issuer/auth"
token_url = "$issuer/token"
scopes = ["openid", "offline_access", "email"]
client_auth = "form"

[oauth2.authorization_params]
prompt = "consent"

[api]
base_url = "$issuer"

[api.credential]
in = "bearer"

[identity]
url = "$issuer/me"
label = "/email"
account_id = "/sub"
TOML
cat >"$tmp/atom.toml" <<TOML
public_url = "http://atom.bench"

[connectors]
providers_dir = "$tmp/providers"
refresh_interval_secs = 0

[connectors.apps.peer]
client_id = "post-client"
client_secret_env = "PEER_CLIENT_SECRET"
TOML
export PEER_CLIENT_SECRET=post-client-secret-value-0123456789
# Nodes sharing a database share the master key that seals the credentials.
ATOM_MASTER_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
export ATOM_MASTER_KEY

# Sets node_url to the node's base URL. Not printed for a `$(...)` to capture: that would run
# it in a subshell, whose `pids` the cleanup never sees, and leave the servers running.
start_node() { # $1: name
  local port
  port=$(free_port)
  ATOM_CONFIG=$tmp/atom.toml ATOM_LISTEN=127.0.0.1:$port ATOM_DATA_DIR=$tmp/$1 ATOM_LOG=warn \
    ATOM_AUTH_REGISTRATION=open ATOM_RATE_LIMIT_ENABLED=false ATOM_HTTP_MAX_CONNECTIONS_PER_IP=4096 \
    ATOM_HTTP_MAX_IN_FLIGHT=4096 \
    target/$profile/atom serve >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
  node_url="http://127.0.0.1:$port"
}
fresh_db() {
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
}
stop_nodes() { # leaves the peer (pids[0]) running
  for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=("${pids[0]}")
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
export ATOM_DATABASE_URL=$pg/$db
fresh_db
start_node one
one=$node_url
printf '{"case":"one node, postgres","results":%s}\n' "$(node bench/refresh.mjs "$issuer" "$one")"
stop_nodes

fresh_db
start_node a
a=$node_url
start_node b
b=$node_url
printf '{"case":"two nodes, one postgres","results":%s}\n' "$(node bench/refresh.mjs "$issuer" "$a" "$b")"
stop_nodes
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
