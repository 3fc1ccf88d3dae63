#!/usr/bin/env bash
# Incoming webhooks on both backends: signed Slack callbacks verified (HMAC-SHA256 over the
# raw body, constant-time compare), stored (unique per event id) and, when routed, delivered
# to their connection's owner through the outbox (bus publish and mark) before the 200; per
# second, with p50/p99, against GET /health of the same server in the same rounds (the
# HTTP stack's own cost). Load: bench/webhooks.mjs (Node's http client, keep-alive).
#
#   bench/webhooks.sh     # BENCH_PG=postgres://postgres@127.0.0.1:5432 BENCH_SECS=10 BENCH_ROUNDS=3
#
# Knobs: BENCH_CONCURRENCY (16), BENCH_PIN (1: the server on CPU 0, the client on CPU 1),
# BENCH_BIN (target/release/atom, built when missing), BENCH_DOC (docs/benchmarks.md: the
# block between the `bench:webhooks` markers is rewritten; empty for none).
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
secs=${BENCH_SECS:-10}
rounds=${BENCH_ROUNDS:-3}
concurrency=${BENCH_CONCURRENCY:-16}
pin=${BENCH_PIN:-1}
bin=${BENCH_BIN:-target/release/atom}
doc=${BENCH_DOC-docs/benchmarks.md}
[ -x "$bin" ] || cargo build --release -q -p atom
tmp=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_hooks WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export BENCH_SECRET
BENCH_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
cat >"$tmp/atom.toml" <<TOML
[connectors.apps.slack]
client_id = "bench-client"
client_secret_env = "BENCH_SECRET"
webhook_secret_env = "BENCH_SECRET"
TOML
server_cpu="" client_cpu=""
if [ "$pin" = 1 ]; then server_cpu="taskset -c 0"; client_cpu="taskset -c 1"; fi
results=$tmp/results

run_backend() { # $1: sqlite|postgres
  local kind=$1 port base sql
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  base=http://127.0.0.1:$port
  unset ATOM_DATABASE_URL
  if [ "$kind" = postgres ]; then
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS atom_bench_hooks WITH (FORCE)" -c "CREATE DATABASE atom_bench_hooks" >/dev/null
    export ATOM_DATABASE_URL=$pg/atom_bench_hooks
  fi
  ATOM_CONFIG=$tmp/atom.toml ATOM_LISTEN=127.0.0.1:$port ATOM_DATA_DIR=$tmp/$kind ATOM_LOG=warn \
    ATOM_AUTH_REGISTRATION=open ATOM_RATE_LIMIT_ENABLED=false $server_cpu "$bin" serve >"$tmp/$kind.log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do curl -sf "$base/ready" >/dev/null && break; sleep 0.2; done
  # The owner of team TBENCH: an account, and a connection row (the webhook path reads only
  # its id, owner, provider and params).
  local email password token uid
  email="bench-$(date +%s%N)@example.com"; password="bench password 0123456789"
  curl -sf "$base/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" >/dev/null
  token=$(curl -sf "$base/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  uid=$(curl -sf "$base/v1/me" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  sql="INSERT INTO connections (id, user_id, provider, auth_kind, account_id, label, status, scopes, params, credentials, created_at, updated_at) VALUES ('bench-conn', '$uid', 'slack', 'oauth2', 'bench', 'bench', 'active', '', '{\"team_id\":\"TBENCH\"}', 'unused', 0, 0)"
  if [ "$kind" = postgres ]; then psql -q "$ATOM_DATABASE_URL" -c "$sql" >/dev/null; else sqlite3 -cmd '.timeout 5000' "$tmp/$kind/atom.db" "$sql"; fi
  $client_cpu node bench/webhooks.mjs "$base" routed 2 "$concurrency" >/dev/null # warm-up
  for round in $(seq "$rounds"); do
    for mode in health routed unrouted; do
      line=$($client_cpu node bench/webhooks.mjs "$base" "$mode" "$secs" "$concurrency")
      echo "$kind $mode $round $line" | tee -a "$results" >&2
    done
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

run_backend sqlite
run_backend postgres

table=$(python3 - "$results" "$secs" "$rounds" "$concurrency" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kind, mode, _, data = line.split(' ', 3)
    rows.setdefault((kind, mode), []).append(json.loads(data))
names = {'health': 'GET /health (comparison)', 'routed': 'webhook, routed to its owner and published',
         'unrouted': 'webhook, kept without an owner'}
out = [f"`bench/webhooks.sh`: {sys.argv[3]} rounds of {sys.argv[2]} s per case, {sys.argv[4]} keep-alive clients, "
       "server on CPU 0 and client on CPU 1; medians of the rounds.", "",
       "| backend | case | req/s | p50 ms | p99 ms | vs /health | non-2xx |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
for kind in ('sqlite', 'postgres'):
    base = statistics.median(r['rps'] for r in rows[(kind, 'health')])
    for mode in ('health', 'routed', 'unrouted'):
        rs = rows[(kind, mode)]
        rps = statistics.median(r['rps'] for r in rs)
        out.append(f"| {kind} | {names[mode]} | {rps:.0f} | {statistics.median(r['p50_ms'] for r in rs):.2f} | "
                   f"{statistics.median(r['p99_ms'] for r in rs):.2f} | {rps / base:.2f} | {sum(r['errors'] for r in rs)} |")
print('\n'.join(out))
PY
)
echo "$table"
if [ -n "$doc" ]; then
  python3 - "$doc" "$table" <<'PY'
import re, sys
path, table = sys.argv[1], sys.argv[2]
text = open(path).read()
block = f"<!-- bench:webhooks:start -->\n{table}\n<!-- bench:webhooks:end -->"
if '<!-- bench:webhooks:start -->' in text:
    text = re.sub(r'<!-- bench:webhooks:start -->.*?<!-- bench:webhooks:end -->', lambda _: block, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n" + block + "\n"
open(path, 'w').write(text)
PY
fi
