#!/usr/bin/env bash
# Whether a failed sign-in with an unknown email takes as long as one with a wrong password
# (the dummy argon2 verification), over HTTP against `atom serve` on a fresh SQLite data
# directory. ROUNDS rounds of interleaved attempts (unknown, wrong, unknown, wrong, ...), so a
# change in the machine's load hits both; each unknown email is new and the real account
# signs in after every two failures, so no throttle slowdown applies to either.
# Usage: bench/login.sh   (BENCH_ATTEMPTS=20 BENCH_ROUNDS=3 BENCH_PROFILE=release)
# Prints each round's medians and the median over the rounds of unknown / wrong, which
# should be close to 1; without the dummy hash it is about 0.03.
set -euo pipefail
cd "$(dirname "$0")/.."

attempts=${BENCH_ATTEMPTS:-20}
rounds=${BENCH_ROUNDS:-3}
profile=${BENCH_PROFILE:-release}

cargo build -q --profile "$profile" -p atom
bin=$PWD/target/$([ "$profile" = dev ] && echo debug || echo "$profile")/atom
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768 and up)
base="http://127.0.0.1:$port"
password='correct horse battery staple'
export ATOM_LOG=warn ATOM_DATA_DIR=$tmp/data ATOM_LISTEN=127.0.0.1:$port \
  ATOM_RATE_LIMIT_ENABLED=false ATOM_AUTH_LOCKOUT_THRESHOLD=1000000 ATOM_AUTH_LOCKOUT_ADDR_THRESHOLD=1000000
unset ATOM_DATABASE_URL ATOM_REDIS_URL
ATOM_ADMIN_PASSWORD=$password "$bin" admin create --email bench@example.com >/dev/null
"$bin" serve >"$tmp/out" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  curl -fsS "$base/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

# Seconds for one sign-in attempt; the status must be $3.
attempt() { # $1: email, $2: password, $3: expected status
  local out
  out=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' "$base/v1/auth/login" \
    -H 'content-type: application/json' -d "{\"email\": \"$1\", \"password\": \"$2\"}")
  [ "${out% *}" = "$3" ] || { echo "sign-in of $1 answered ${out% *}, not $3" >&2; exit 1; }
  echo "${out#* }"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
attempt bench@example.com "$password" 200 >/dev/null # warm-up
for round in $(seq "$rounds"); do
  : >"$tmp/unknown"
  : >"$tmp/wrong"
  for i in $(seq "$attempts"); do
    attempt "ghost-$round-$i@example.com" "$password" 401 >>"$tmp/unknown"
    attempt bench@example.com 'not the password' 401 >>"$tmp/wrong"
    [ $((i % 2)) = 0 ] && attempt bench@example.com "$password" 200 >/dev/null
  done
  unknown=$(median <"$tmp/unknown")
  wrong=$(median <"$tmp/wrong")
  awk -v u="$unknown" -v w="$wrong" -v r="$round" \
    'BEGIN {printf "round %d: unknown email %.1f ms, wrong password %.1f ms, unknown / wrong %.2f\n", r, u * 1000, w * 1000, u / w}' |
    tee -a "$tmp/rounds"
done
awk '{print $NF}' "$tmp/rounds" | median | awk '{printf "median unknown / wrong over the rounds: %.2f\n", $1}'
