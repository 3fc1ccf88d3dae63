#!/usr/bin/env bash
# Identity and edge costs (issues "identity" and "edge protection"):
#   - JWT (EdDSA) verifications per second on one core;
#   - one local GCRA rate-limit decision, and Redis-shared decisions under concurrency;
#   - a trivial route over HTTP: public, behind authentication, and behind authentication
#     with rate limiting off, to show what authentication and the edge stack cost.
# Usage: bench/auth.sh   (BENCH_SECS=8 BENCH_RUNS=3 BENCH_REDIS=redis://127.0.0.1:6379)
# Prints a markdown section; with BENCH_DOC=docs/benchmarks.md it replaces the block between
# the `bench:auth` markers there.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${BENCH_SECS:-8}
runs=${BENCH_RUNS:-3}
redis_url=${BENCH_REDIS:-redis://127.0.0.1:6379}
doc=${BENCH_DOC:-}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p atom-bench
bin=target/release/atom-bench

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== micro-benchmarks" >&2
jwt=$(for _ in $(seq "$runs"); do taskset -c 1 "$bin" jwt 3 | awk '{print $2}'; done | median)
local_ns=$(for _ in $(seq "$runs"); do taskset -c 1 "$bin" ratelimit-local 3 | awk '{print $2}'; done | median)
redis_rows=$(for _ in $(seq "$runs"); do "$bin" ratelimit-redis "$redis_url" 32 3; done)
redis_rate=$(echo "$redis_rows" | awk '{print $2}' | median)
redis_p50=$(echo "$redis_rows" | awk '{print $4}' | median)
redis_p99=$(echo "$redis_rows" | awk '{print $6}' | median)

# Limits high enough never to deny: the decision is made and counted, never refused.
export ATOM_LOG=warn ATOM_RATE_LIMIT_API_PER_MINUTE=1000000000 ATOM_RATE_LIMIT_API_BURST=1000000 \
  ATOM_RATE_LIMIT_ANONYMOUS_PER_MINUTE=1000000000 ATOM_RATE_LIMIT_ANONYMOUS_BURST=1000000 \
  ATOM_HTTP_MAX_IN_FLIGHT=100000

start_server() { # $1: rate limiting on|off
  local port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768 and up)
  rm -rf "$tmp/data" && mkdir -p "$tmp/data"
  ATOM_RATE_LIMIT_ENABLED=$([ "$1" = on ] && echo true || echo false) \
    taskset -c 0 "$bin" serve "127.0.0.1:$port" "$tmp/data" >"$tmp/out" 2>"$tmp/err" &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  token=$(head -1 "$tmp/out")
  base="http://127.0.0.1:$port"
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

rps() { # $1: url, $2: extra header or empty
  local args=(-t1 -c32 -d"${secs}s" --latency)
  [ -n "$2" ] && args+=(-H "$2")
  taskset -c 1 wrk "${args[@]}" "$1" | awk '/Requests\/sec/ {print $2}'
}

declare -A samples
for round in $(seq "$runs"); do
  echo "== HTTP round $round" >&2
  start_server on
  curl -fsS -H "Authorization: Bearer $token" "$base/bench/protected" >/dev/null
  samples[public]+="$(rps "$base/bench/public" "") "
  samples[protected]+="$(rps "$base/bench/protected" "Authorization: Bearer $token") "
  stop_server
  start_server off
  samples[protected_nolimits]+="$(rps "$base/bench/protected" "Authorization: Bearer $token") "
  samples[public_nolimits]+="$(rps "$base/bench/public" "") "
  stop_server
done
med() { echo "${samples[$1]}" | tr ' ' '\n' | grep . | median; }
public=$(med public)
protected=$(med protected)
protected_off=$(med protected_nolimits)
public_off=$(med public_nolimits)
auth_loss=$(awk -v a="$protected" -v b="$public" 'BEGIN {printf "%.1f", (1 - a / b) * 100}')
edge_loss=$(awk -v a="$protected" -v b="$protected_off" 'BEGIN {printf "%.1f", (1 - a / b) * 100}')
edge_loss_public=$(awk -v a="$public" -v b="$public_off" 'BEGIN {printf "%.1f", (1 - a / b) * 100}')

section=$(cat <<EOF
<!-- bench:auth:start -->
Run: \`bench/auth.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),
server pinned to CPU 0 and client to CPU 1, \`wrk -t1 -c32 -d${secs}s\`, medians of $runs rounds.

| measurement | median |
| --- | ---: |
| JWT (EdDSA) verifications per second, one thread | $jwt |
| local GCRA decision (governor), ns | $local_ns |
| Redis-shared GCRA decisions per second, 32 concurrent tasks, one node | $redis_rate |
| Redis-shared decision latency p50 / p99, µs | $redis_p50 / $redis_p99 |
| \`GET /bench/public\` req/s (edge stack, anonymous limit) | $public |
| \`GET /bench/protected\` req/s (edge stack, JWT auth, per-user limit) | $protected |
| \`GET /bench/protected\` req/s, rate limiting off | $protected_off |
| \`GET /bench/public\` req/s, rate limiting off | $public_off |

- authentication's cost on a trivial route: **${auth_loss}%** of throughput (target under 10%)
- the rate limits' cost on the authenticated route: **${edge_loss}%** (target under 10%); on the public route: ${edge_loss_public}%
<!-- bench:auth:end -->
EOF
)
echo "$section"
if [ -n "$doc" ]; then
  if grep -q 'bench:auth:start' "$doc"; then
    python3 - "$doc" "$section" <<'PY'
import sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
start = text.index("<!-- bench:auth:start -->")
end = text.index("<!-- bench:auth:end -->") + len("<!-- bench:auth:end -->")
open(path, "w").write(text[:start] + section + text[end:])
PY
  else
    printf '\n## Identity and edge: `bench/auth.sh`\n\n%s\n' "$section" >>"$doc"
  fi
fi
