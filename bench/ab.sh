#!/usr/bin/env bash
# Interleaved A/B of one or more atom binaries against bare axum, for judging a change on a
# noisy machine: every server is started once (pinned to CPU 0, wrk on CPU 1), then each
# round runs `wrk -t1 -c32` for SECS on each server in turn, so that a slow spell of the
# host lands on all of them. Prints each round and the median ratio to bare per binary.
#
#   bench/ab.sh /tmp/atom-before target/release/atom     (default: target/release/atom)
#
# Environment: ROUNDS (6), SECS (3), APATH (/health), LOG (ATOM_LOG, warn). Builds nothing:
# build the binaries (and bare-axum: cargo build --release -p bare-axum) first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BARE=$ROOT/target/release/bare-axum
[ "$#" -gt 0 ] || set -- "$ROOT/target/release/atom"
for bin in "$BARE" "$@"; do [ -x "$bin" ] || { echo "missing $bin" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT

names=(bare)
ports=(18101)
taskset -c 0 "$BARE" 127.0.0.1:18101 >/dev/null 2>&1 &
PIDS+=($!)
i=0
for bin in "$@"; do
  i=$((i + 1))
  port=$((18101 + i))
  names+=("atom$i")
  ports+=("$port")
  env -u ATOM_CONFIG -u ATOM_DATABASE_URL -u ATOM_REDIS_URL ATOM_LISTEN="127.0.0.1:$port" \
    ATOM_DATA_DIR="$TMP/data$i" ATOM_LOG="${LOG:-warn}" taskset -c 0 "$bin" serve >/dev/null 2>&1 &
  PIDS+=($!)
  echo "atom$i = $bin"
done
sleep 2
rps() { taskset -c 1 wrk -t1 -c32 -d"$2"s "http://127.0.0.1:$1${APATH:-/health}" | awk '/Requests\/sec/ { printf "%.0f", $2 }'; }
for port in "${ports[@]}"; do rps "$port" 1 >/dev/null; done
for round in $(seq "${ROUNDS:-6}"); do
  line="round $round:"
  for j in "${!names[@]}"; do
    v=$(rps "${ports[$j]}" "${SECS:-3}")
    line="$line ${names[$j]}=$v"
    echo "$round ${names[$j]} $v" >>"$TMP/results"
  done
  echo "$line"
done
for name in "${names[@]:1}"; do
  awk -v n="$name" '$2 == "bare" { b[$1] = $3 } $2 == n { a[$1] = $3 } END { for (k in a) print a[k] / b[k] }' "$TMP/results" |
    sort -g | awk -v n="$name" '{ v[NR] = $1 } END { printf "%s ÷ bare: median %.2f (min %.2f, max %.2f)\n", n, v[int((NR + 1) / 2)], v[1], v[NR] }'
done
