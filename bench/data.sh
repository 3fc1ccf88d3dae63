#!/usr/bin/env bash
# Data-layer costs (issue "data layer"), on SQLite (a temporary data directory) and on
# PostgreSQL (a fresh database, created and dropped here):
#   - account lookup (`users::by_email`) and audit listing (`audit::list`: first page of 100,
#     a page at a random cursor, one actor's first page) p50/p99 at 100,000 and 1,000,000
#     rows in `users` and in `audit_log`, BENCH_ITERS runs each with random keys;
#   - `Cache::get_or_load` of a user row, miss (the loader reads the database) against hit,
#     in process and in Redis (a key prefix of its own, deleted at the end);
#   - `atom backup create`, `backup verify` and `backup restore` (into a fresh, empty
#     database, with the data directory's master key) of a database filled to about
#     BENCH_BACKUP_MB megabytes with large audit rows; seconds, seconds per GB, archive size.
# Usage: bench/data.sh   (BENCH_ITERS=2000 BENCH_BACKUP_MB=1024
#   BENCH_PG=postgres://postgres@127.0.0.1:5432 BENCH_REDIS=redis://127.0.0.1:6379)
# Needs psql, pg_dump, pg_restore and redis-cli. Prints a markdown section; with
# BENCH_DOC=docs/benchmarks.md it replaces the block between the `bench:data` markers there.
set -euo pipefail
cd "$(dirname "$0")/.."

iters=${BENCH_ITERS:-2000}
backup_mb=${BENCH_BACKUP_MB:-1024}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
redis_url=${BENCH_REDIS:-redis://127.0.0.1:6379}
doc=${BENCH_DOC:-}

cargo build --release -q -p atom -p atom-bench
bin=$PWD/target/release/atom-bench
atom=$PWD/target/release/atom

tmp=$(mktemp -d)
db_name=atom_bench_data_$$
restore_name=${db_name}_restore
prefix=atom-bench-data-$$
cleanup() {
  for name in "$db_name" "$restore_name"; do
    psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
  done
  redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null \
    | xargs -r redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

export ATOM_LOG=warn
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

run_backend() { # $1: sqlite|postgres
  local kind=$1 data=$tmp/$1 t0 t1 t2 t3 archive
  mkdir -p "$data"
  export ATOM_DATA_DIR=$data
  unset ATOM_DATABASE_URL
  if [ "$kind" = postgres ]; then
    psql -q "$pg/postgres" -c "CREATE DATABASE $db_name" >/dev/null
    export ATOM_DATABASE_URL=$pg/$db_name
  fi
  echo "== $kind: seed and query at 100k" >&2
  "$bin" data-seed 1 100000 >&2
  "$bin" data-query 100000 "$iters" >"$tmp/$kind.q100k"
  echo "== $kind: seed and query at 1M" >&2
  "$bin" data-seed 100001 1000000 >&2
  "$bin" data-query 1000000 "$iters" >"$tmp/$kind.q1m"
  echo "== $kind: cache" >&2
  "$bin" data-cache 1000000 "$iters" >"$tmp/$kind.cache-memory"
  "$bin" data-cache 1000000 "$iters" "$redis_url" "$prefix-$kind" >"$tmp/$kind.cache-redis"
  echo "== $kind: fill to ${backup_mb} MB" >&2
  "$bin" data-fill "$backup_mb" >"$tmp/$kind.size"
  echo "== $kind: backup create / verify / restore" >&2
  t0=$(now)
  archive=$("$atom" backup create --out "$tmp/$kind-archives" | tail -1)
  t1=$(now)
  "$atom" backup verify "$archive" >&2
  t2=$(now)
  if [ "$kind" = postgres ]; then
    psql -q "$pg/postgres" -c "CREATE DATABASE $restore_name" >/dev/null
    ATOM_DATA_DIR=$tmp/$kind-restore ATOM_DATABASE_URL=$pg/$restore_name ATOM_MASTER_KEY_FILE=$data/master.key \
      "$atom" backup restore "$archive" >&2
  else
    ATOM_DATA_DIR=$tmp/$kind-restore ATOM_MASTER_KEY_FILE=$data/master.key "$atom" backup restore "$archive" >&2
  fi
  t3=$(now)
  echo "$(secs "$t0" "$t1") $(secs "$t1" "$t2") $(secs "$t2" "$t3") $(du -sb "$archive" | cut -f1)" >"$tmp/$kind.backup"
  # Free the disk before the next backend.
  rm -rf "$data/atom.db"* "$tmp/$kind-archives" "$tmp/$kind-restore"
  if [ "$kind" = postgres ]; then
    psql -q "$pg/postgres" -c "DROP DATABASE $db_name WITH (FORCE)" -c "DROP DATABASE $restore_name WITH (FORCE)"
  fi
}

run_backend sqlite
run_backend postgres
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - started))

field() { awk -v q="$2" -v c="$3" '$1 == q {print $c}' "$tmp/$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a / b}'; }

query_rows() {
  local q s1 s2 p1 p2
  for q in users.by_email audit.list audit.list_cursor audit.list_by_actor; do
    s1=$(field sqlite.q100k "$q" 2) s2=$(field sqlite.q1m "$q" 2) p1=$(field postgres.q100k "$q" 2) p2=$(field postgres.q1m "$q" 2)
    echo "| \`$q\` | $s1 / $(field sqlite.q100k "$q" 3) | $s2 / $(field sqlite.q1m "$q" 3) | $(ratio "$s2" "$s1") \
| $p1 / $(field postgres.q100k "$q" 3) | $p2 / $(field postgres.q1m "$q" 3) | $(ratio "$p2" "$p1") |"
  done
}

cache_rows() {
  local kind cache file miss hit
  for kind in sqlite postgres; do
    for cache in memory redis; do
      file=$kind.cache-$cache
      miss=$(field "$file" "cache.$cache.miss" 2) hit=$(field "$file" "cache.$cache.hit" 2)
      echo "| $kind | $cache | $(field "$file" users.by_id 2) / $(field "$file" users.by_id 3) \
| $miss / $(field "$file" "cache.$cache.miss" 3) | $hit / $(field "$file" "cache.$cache.hit" 3) | $(ratio "$miss" "$hit") |"
    done
  done
}

backup_rows() {
  local kind size create verify restore archive gb
  for kind in sqlite postgres; do
    size=$(cat "$tmp/$kind.size")
    read -r create verify restore archive <"$tmp/$kind.backup"
    gb=$(awk -v s="$size" 'BEGIN {print s / 1073741824}')
    echo "| $kind | $((size / 1048576)) | $((archive / 1048576)) | $create | $verify | $restore \
| $(ratio "$create" "$gb") | $(ratio "$verify" "$gb") | $(ratio "$restore" "$gb") |"
  done
}

pg_version=$(psql -At "$pg/postgres" -c 'SHOW server_version' | cut -d' ' -f1)
redis_version=$(redis-cli -u "$redis_url" info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r')
section=$(cat <<EOF
<!-- bench:data:start -->
Run: \`bench/data.sh\` (\`BENCH_ITERS=$iters BENCH_BACKUP_MB=$backup_mb\`) on $(date -u +%Y-%m-%d),
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), PostgreSQL $pg_version and Redis $redis_version
on the same host; load average $load_before before and $load_after after (other benchmarks share the machine);
${elapsed} s in all. One client, one query at a time; each figure is over $iters runs (after
$((iters / 10)) unmeasured), keys drawn at random.

Hot queries with \`users\` and \`audit_log\` both at 100,000 and at 1,000,000 rows, p50 / p99 in µs
(ratio: p50 at 1M over p50 at 100k). Audit rows are spread over 1,000 actors, so an actor's first
page is always a full 100 rows.

| query | SQLite 100k | SQLite 1M | ratio | PostgreSQL 100k | PostgreSQL 1M | ratio |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
$(query_rows)

\`Cache::get_or_load\` of a user row (1M users), p50 / p99 in µs: a miss runs the loader
(\`users::by_id\`, also timed alone) and stores the value; a hit reads it back. Each miss is of
a distinct user never cached.

| database | cache | \`users::by_id\` alone | miss | hit | miss / hit (p50) |
| --- | --- | ---: | ---: | ---: | ---: |
$(cache_rows)

Backups of the database above (1M users and 1M small audit rows), topped up when smaller with
large audit rows (~3 KB of hex details each) to at least ${backup_mb} MB: \`atom backup create\`, \`atom backup verify\`, and \`atom backup restore\`
into a fresh, empty database with the data directory's master key (\`ATOM_MASTER_KEY_FILE\`).
Seconds, and seconds per GB of database (size as the engine reports it).

| database | size MB | archive MB | create s | verify s | restore s | create s/GB | verify s/GB | restore s/GB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(backup_rows)
<!-- bench:data:end -->
EOF
)
echo "$section"
if [ -n "$doc" ]; then
  [ -f "$doc" ] || printf '# Benchmarks\n\nMeasured with the scripts in `bench/`; each section is rewritten by its script.\n' >"$doc"
  if grep -q 'bench:data:start' "$doc"; then
    python3 - "$doc" "$section" <<'PY'
import sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
start = text.index("<!-- bench:data:start -->")
end = text.index("<!-- bench:data:end -->") + len("<!-- bench:data:end -->")
open(path, "w").write(text[:start] + section + text[end:])
PY
  else
    printf '\n## Data layer: `bench/data.sh`\n\n%s\n' "$section" >>"$doc"
  fi
fi
