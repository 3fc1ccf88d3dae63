#!/usr/bin/env bash
# What `database.sqlite_synchronous = "full"` (the default) costs against "normal": p50/p99
# of a write transaction (one audit row appended and committed, one after another), on a
# fresh SQLite database in a directory on the same disk as the repository (not /tmp, which
# may be memory-backed, where a sync costs nothing). ROUNDS rounds alternate the two
# settings, each on its own database, so that a change in the machine's load hits both.
# Usage: bench/sqlite-sync.sh   (BENCH_ITERS=2000 BENCH_ROUNDS=3 BENCH_PROFILE=release)
# Prints one line per run and the medians over the rounds, with their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

iters=${BENCH_ITERS:-2000}
rounds=${BENCH_ROUNDS:-3}
profile=${BENCH_PROFILE:-release}

cargo build -q --profile "$profile" -p atom-bench
bin=$PWD/target/$([ "$profile" = dev ] && echo debug || echo "$profile")/atom-bench
tmp=$(mktemp -d "$PWD/target/sqlite-sync.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

export ATOM_LOG=warn
unset ATOM_DATABASE_URL
for round in $(seq "$rounds"); do
  for mode in full normal; do
    dir=$tmp/$mode-$round
    mkdir -p "$dir"
    line=$(ATOM_DATA_DIR=$dir ATOM_DATABASE_SQLITE_SYNCHRONOUS=$mode "$bin" data-commits "$iters")
    echo "$mode ${line#commit }" | tee -a "$tmp/results"
  done
done

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for col in 2 3; do
  full=$(awk -v c=$col '$1 == "full" {print $c}' "$tmp/results" | median)
  normal=$(awk -v c=$col '$1 == "normal" {print $c}' "$tmp/results" | median)
  label=$([ $col = 2 ] && echo p50 || echo p99)
  awk -v l=$label -v f="$full" -v n="$normal" \
    'BEGIN {printf "median %s: full %.1f us, normal %.1f us, full / normal %.2f\n", l, f, n, f / n}'
done
