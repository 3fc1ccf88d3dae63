#!/usr/bin/env bash
# The agent's proxy: what going through `/v1/proxy/{connection_id}/{path}` adds to a call,
# against calling the provider directly (the comparison run, in the same script).
#
#   bench/proxy.sh          from any directory; installs wrk (Debian) when missing
#
# The provider is bench/bare-axum (`GET /health`, a small JSON answer) on loopback; Atom
# (atom-bench proxy-serve: the release build with one API-key connection whose template's
# base URL is that stub, loopback allowed by connectors.proxy_allow_ranges, the rate limits
# out of the way) forwards to it with the connection's key injected as a bearer token. The
# caller is an agent: it presents an API key of the connection's owner with the
# `connections:use` scope, as `proxy-serve` prints it. Each case is
# measured with `wrk -t1 -c$CONNECTIONS -d$DURATION --latency`, $RUNS times in interleaved
# rounds (direct, proxy), medians reported: requests per second, p50 and p99. Servers on
# CPU 0, wrk on CPU 1 (taskset), so the proxy and the stub share one core in the proxy case.
#
# Environment: BENCH_DURATION (10), BENCH_RUNS (3), BENCH_CONNECTIONS (16), BENCH_WARMUP (2),
# BENCH_DOC (docs/benchmarks.md; empty to write none).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
WARMUP=${BENCH_WARMUP:-2}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

if ! command -v wrk >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "wrk is not installed; run: apt-get install wrk"
  log "installing wrk"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

log "building release binaries (atom-bench, bare-axum)"
(cd "$ROOT" && cargo build --release --locked --quiet -p atom-bench -p bare-axum)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

TMP=$(mktemp -d "${TMPDIR:-/tmp}/atom-bench-proxy.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

port() { echo $((20000 + RANDOM % 12000)); } # below the ephemeral range
wait_http() { # $1: URL that answers once the server is up
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  die "no answer from $1"
}

STUB_PORT=$(port)
taskset -c 0 "$TARGET_DIR/release/bare-axum" "127.0.0.1:$STUB_PORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$STUB_PORT/health"

mkdir -p "$TMP/providers" "$TMP/data"
cat >"$TMP/providers/bench-stub.toml" <<EOF
id = "bench-stub"
name = "Bench stub"
auth_mode = "api_key"

[[fields]]
name = "api_key"
label = "API key"
secret = true
pattern = "^[A-Za-z0-9_-]{8,64}\$"
example = "key_example_123"

[api]
base_url = "http://127.0.0.1:$STUB_PORT"

[api.credential]
in = "bearer"
value = "{api_key}"
EOF

ATOM_PORT=$(port)
ATOM_LOG=warn ATOM_CONNECTORS_PROVIDERS_DIR="$TMP/providers" \
  ATOM_CONNECTORS_PROXY_ALLOW_RANGES='["127.0.0.0/8"]' \
  ATOM_CONNECTORS_PROXY_CONNECTION_PER_MINUTE=1000000000 ATOM_CONNECTORS_PROXY_CONNECTION_BURST=1000000 \
  ATOM_CONNECTORS_PROXY_KEY_PER_MINUTE=1000000000 ATOM_CONNECTORS_PROXY_KEY_BURST=1000000 \
  ATOM_RATE_LIMIT_API_PER_MINUTE=1000000000 ATOM_RATE_LIMIT_API_BURST=1000000 ATOM_HTTP_MAX_IN_FLIGHT=100000 \
  taskset -c 0 "$TARGET_DIR/release/atom-bench" proxy-serve "127.0.0.1:$ATOM_PORT" "$TMP/data" bench-stub \
  >"$TMP/atom.out" 2>"$TMP/atom.err" &
PIDS+=($!)
wait_http "http://127.0.0.1:$ATOM_PORT/health"
for _ in $(seq 100); do [ -s "$TMP/atom.out" ] && break; sleep 0.05; done
read -r KEY CONNECTION <"$TMP/atom.out" || die "proxy-serve printed no key: $(cat "$TMP/atom.err")"

DIRECT="http://127.0.0.1:$STUB_PORT/health"
PROXIED="http://127.0.0.1:$ATOM_PORT/v1/proxy/$CONNECTION/health"
code=$(curl -s -o "$TMP/first" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$PROXIED")
[ "$code" = 200 ] || die "the proxy answered $code: $(cat "$TMP/first")"

# wrk's latency line value in milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); print v} else {sub(/s/,"",v); print v*1000}}'; }
run() { # $1: case name, $2: URL, $3…: extra wrk arguments
  local name=$1 url=$2
  shift 2
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$WARMUP"s "$@" "$url" >/dev/null
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s --latency "$@" "$url" >"$TMP/wrk.out"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.out")
  p50=$(awk '$1 == "50%" {print $2}' "$TMP/wrk.out" | to_ms)
  p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk.out" | to_ms)
  grep -q "Non-2xx" "$TMP/wrk.out" && die "$name: non-2xx answers: $(cat "$TMP/wrk.out")"
  echo "$name $rps $p50 $p99" >>"$TMP/results"
  log "$name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$RUNS"); do
  log "round $round of $RUNS"
  run direct "$DIRECT"
  run proxy "$PROXIED" -H "Authorization: Bearer $KEY"
done

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$TMP/results" | median; }
d_rps=$(col direct 2) d_p50=$(col direct 3) d_p99=$(col direct 4)
p_rps=$(col proxy 2) p_p50=$(col proxy 3) p_p99=$(col proxy 4)
added_p50=$(awk -v a="$p_p50" -v b="$d_p50" 'BEGIN {printf "%.3f", a - b}')
added_p99=$(awk -v a="$p_p99" -v b="$d_p99" 'BEGIN {printf "%.3f", a - b}')
ratio=$(awk -v a="$p_rps" -v b="$d_rps" 'BEGIN {printf "%.2f", a / b}')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)

section=$(
  cat <<EOF
<!-- bench:proxy -->
Command: \`bench/proxy.sh\` (wrk -t1 -c$CONNECTIONS, ${DURATION}s per run, $RUNS interleaved rounds,
medians), release build of \`$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\`.
Machine: $(nproc) CPUs ($cpu), servers on CPU 0, wrk on CPU 1; the machine is shared with
other work, load average (1, 5, 15 min) $load_before before and $load_after after the run.
The provider is \`bare-axum\`'s \`GET /health\` on loopback; the proxy case calls it through
\`/v1/proxy/{connection_id}/health\` with an agent's API key (\`connections:use\`), the
connection's API key injected as a bearer.

| case | requests/s | p50 (ms) | p99 (ms) |
| --- | ---: | ---: | ---: |
| direct to the stub | $d_rps | $d_p50 | $d_p99 |
| through the proxy | $p_rps | $p_p50 | $p_p99 |

Added by the proxy: p50 +$added_p50 ms, p99 +$added_p99 ms; throughput ratio (proxy / direct)
$ratio. The proxy case also pays authentication, the edge and request log stack, the
connection lookup and decryption, and a second HTTP hop sharing the server's core.
<!-- /bench:proxy -->
EOF
)
printf '%s\n' "$section"
if [ -n "$DOC" ]; then
  if grep -q '<!-- bench:proxy -->' "$DOC"; then
    printf '%s\n' "$section" >"$TMP/section"
    awk -v f="$TMP/section" '
      /<!-- bench:proxy -->/ {while ((getline line < f) > 0) print line; skip = 1; next}
      /<!-- \/bench:proxy -->/ {skip = 0; next}
      !skip {print}' "$DOC" >"$TMP/doc" && cat "$TMP/doc" >"$DOC"
  else
    printf '\n## The agent'"'"'s proxy: `bench/proxy.sh`\n\n%s\n' "$section" >>"$DOC"
  fi
  log "updated $DOC"
fi
