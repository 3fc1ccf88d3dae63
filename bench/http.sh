#!/usr/bin/env bash
# HTTP benchmark: atom's GET /health and GET /ready against a bare axum GET /health (the
# comparison run), same machine, same client, same settings. Writes the results into
# docs/benchmarks.md between its "bench:results" markers and prints them.
#
#   bench/http.sh                  from any directory; installs wrk (Debian) when missing
#
# 1. Peak throughput, closed loop: `wrk -t1 -c$CONNECTIONS -d$DURATION --latency`, each case
#    measured $RUNS times in interleaved rounds (bare, atom with ATOM_LOG=warn, atom with the
#    default info request log written to /dev/null), medians reported.
# 2. Latency at half of each server's median peak, open loop, with bench/loadgen (fixed
#    request rate, latency counted from each request's scheduled instant). With
#    BENCH_AWAKE=1, also with the server's CPU kept from idling by a SCHED_IDLE busy loop: on
#    a virtual machine, waking an idle virtual CPU can take milliseconds, which is the
#    machine's cost, not the server's (meaningful only when no other job is running).
#
# The server is pinned to CPU 0 and the client to CPU 1 (taskset), so each has one core and
# they do not take turns on the same one; the servers' tokio runtimes then start one worker.
#
# Environment: BENCH_DURATION (seconds per peak run, 10), BENCH_HALF_DURATION (seconds per
# half-load run, 5), BENCH_RUNS (3), BENCH_HALF_RUNS (half-load runs per case, 5: a stall of
# the whole virtual machine spoils one run's p99 now and then, and the median of five
# outlasts two such runs), BENCH_CONNECTIONS (32), BENCH_WARMUP (seconds, 2),
# BENCH_PIN (1; 0 lets the scheduler place everything, and the half-load client, which
# spins, then competes with the server), BENCH_AWAKE (0; 1 adds the kept-awake
# half-load runs, pinned only), BENCH_DOC (the markdown file to update, docs/benchmarks.md;
# empty to write none).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
HALF_DURATION=${BENCH_HALF_DURATION:-5}
RUNS=${BENCH_RUNS:-3}
HALF_RUNS=${BENCH_HALF_RUNS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WARMUP=${BENCH_WARMUP:-2}
PIN=${BENCH_PIN:-1}
AWAKE=${BENCH_AWAKE:-0}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/atom-bench.XXXXXX")
SERVER_PID=
AWAKE_PID=
stop_awake() {
  [ -n "$AWAKE_PID" ] || return 0
  kill "$AWAKE_PID" 2>/dev/null || true
  wait "$AWAKE_PID" 2>/dev/null || true
  AWAKE_PID=
}
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
cleanup() {
  stop_awake
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools and binaries ----------------------------------------------------------------------

if ! command -v wrk >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "wrk is not installed; run: apt-get install wrk"
  log "installing wrk"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in curl taskset chrt awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

log "building release binaries (atom, bare-axum, loadgen)"
(cd "$ROOT" && cargo build --release --locked --quiet -p atom -p bare-axum -p loadgen)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
ATOM="$TARGET_DIR/release/atom"
BARE="$TARGET_DIR/release/bare-axum"
LOADGEN="$TARGET_DIR/release/loadgen"
for bin in "$ATOM" "$BARE" "$LOADGEN"; do
  [ -x "$bin" ] || die "missing $bin after the build"
done

SERVER_CPU=()
CLIENT_CPU=()
PINNING="none (scheduler's choice)"
AWAKE_CASES=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 0)
  CLIENT_CPU=(taskset -c 1)
  PINNING="server on CPU 0, client on CPU 1 (taskset)"
  if [ "$AWAKE" = 1 ]; then
    AWAKE_CASES=(atom-warn bare)
  fi
fi
CLK_TCK=$(getconf CLK_TCK)

# --- servers ---------------------------------------------------------------------------------

PORT=
free_port() {
  local port
  for _ in $(seq 50); do
    # Below the kernel's ephemeral range (32768 and up here), where the client's own
    # connections would take ports that the check below might see free a moment before.
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "found no free loopback port"
}

wait_ready() {
  local errlog=$1
  for _ in $(seq 200); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$errlog" >&2 || true
      die "the server exited at start-up"
    fi
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && return 0
    sleep 0.05
  done
  cat "$errlog" >&2 || true
  die "the server did not answer /health within 10s"
}

# start_server CASE: bare | atom-warn | atom-info
start_server() {
  PORT=$(free_port)
  case $1 in
    bare)
      "${SERVER_CPU[@]}" "$BARE" "127.0.0.1:$PORT" >"$TMP/server.out" 2>"$TMP/server.err" &
      ;;
    atom-warn | atom-info)
      local level=${1#atom-} out="$TMP/server.out"
      # The default info level logs one line per request; /dev/null keeps the disk out of it.
      [ "$level" = info ] && out=/dev/null
      rm -rf "$TMP/data"
      env -u ATOM_CONFIG -u ATOM_DATABASE_URL -u ATOM_REDIS_URL -u ATOM_LOG_FORMAT \
        ATOM_LISTEN="127.0.0.1:$PORT" ATOM_DATA_DIR="$TMP/data" ATOM_LOG="$level" \
        ATOM_SHUTDOWN_GRACE_SECS=5 \
        "${SERVER_CPU[@]}" "$ATOM" serve >"$out" 2>"$TMP/server.err" &
      ;;
    *) die "unknown case $1" ;;
  esac
  SERVER_PID=$!
  wait_ready "$TMP/server.err"
}

# A busy loop at the lowest priority on the server's CPU: it yields at once to the server,
# but the CPU never goes idle, so no wake-up of an idle (virtual) CPU is measured.
keep_server_cpu_awake() {
  "${SERVER_CPU[@]}" chrt -i 0 sh -c 'while :; do :; done' &
  AWAKE_PID=$!
}

# CPU seconds the server has used so far (user + system, all threads).
server_cpu_secs() {
  awk -v tck="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / tck }' "/proc/$SERVER_PID/stat"
}

# --- measurements ----------------------------------------------------------------------------

# Busy CPU seconds of the server's CPU (CPU 0 when pinned, else all CPUs), whoever used them:
# user, nice, system, irq, softirq, steal.
machine_cpu_secs() {
  local cpu=cpu
  [ "${#SERVER_CPU[@]}" -gt 0 ] && cpu=cpu0
  awk -v cpu="$cpu" -v tck="$CLK_TCK" '$1 == cpu { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / tck }' /proc/stat
}

# wrk_run PATH SECONDS: prints "req/s p50_ms p99_ms server_cpu cpu_busy req_per_cpu_s": CPU as
# a fraction of one CPU, what the server used and how busy its CPU was in all (other
# developers' jobs, the kernel's loopback work); requests per CPU-second the server used.
wrk_run() {
  local path=$1 secs=$2 out cpu0 cpu1 busy0 busy1
  cpu0=$(server_cpu_secs)
  busy0=$(machine_cpu_secs)
  out=$("${CLIENT_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --latency "http://127.0.0.1:$PORT$path")
  cpu1=$(server_cpu_secs)
  busy1=$(machine_cpu_secs)
  printf '%s\n' "$out" >>"$TMP/wrk.log"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    printf '%s\n' "$out" >&2
    die "wrk saw errors on $path"
  fi
  awk -v c0="$cpu0" -v c1="$cpu1" -v b0="$busy0" -v b1="$busy1" -v secs="$secs" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 }
    END {
      cpu = (c1 - c0) / secs
      printf "%.0f %.3f %.3f %.2f %.2f %.0f\n", rps, p50, p99, cpu, (b1 - b0) / secs, (cpu > 0 ? rps / cpu : 0)
    }' <<<"$out"
}

# loadgen_run PATH RATE: prints "achieved p50 p99 p999 max service_p99 lag_p99" (ms).
loadgen_run() {
  local out
  out=$("${CLIENT_CPU[@]}" "$LOADGEN" --addr "127.0.0.1:$PORT" --path "$1" --rate "$2" \
    --duration "$HALF_DURATION" --warmup 1 --connections "$CONNECTIONS")
  printf '%s\n' "$out" >>"$TMP/loadgen.log"
  awk '{ v[$1] = $2 }
    END {
      if (v["errors"] + v["non_2xx"] > 0) { print "errors " v["errors"] " non_2xx " v["non_2xx"] > "/dev/stderr"; exit 1 }
      print v["achieved_rps"], v["latency_p50_ms"], v["latency_p99_ms"], v["latency_p999_ms"], v["latency_max_ms"], v["service_p99_ms"], v["lag_p99_ms"]
    }' <<<"$out" || die "loadgen saw errors on $1"
}

# median NAME FIELD: median of column FIELD over the result lines named NAME in FILE.
median() {
  awk -v name="$1" -v f="$2" '$1 == name { print $f }' "$3" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() {
  awk -v name="$1" -v f="$2" '$1 == name { print $f }' "$3" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'
}

PEAK="$TMP/peak"
HALF="$TMP/half"
: >"$PEAK"
: >"$HALF"
# How busy the machine is before we start (other developers' builds and tests share it): all
# CPUs' busy time over 2 s, as a percentage of one CPU.
machine_busy_pct() {
  local a b
  a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
  sleep 2
  b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
  awk -v a="$a" -v b="$b" -v tck="$CLK_TCK" 'BEGIN { printf "%.0f%%", 100 * (b - a) / tck / 2 }'
}
BUSY_BEFORE=$(machine_busy_pct)
log "the machine was busy at $BUSY_BEFORE of one CPU (of $(nproc)) before the run"
STARTED=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
CASES=(bare atom-warn atom-info)

log "peak throughput: $RUNS rounds, wrk -t1 -c$CONNECTIONS -d${DURATION}s; pinning: $PINNING"
for round in $(seq "$RUNS"); do
  # Rotate the order each round so that a slow spell on the machine is not always one case's.
  for i in 0 1 2; do
    case_=${CASES[$(((i + round - 1) % 3))]}
    start_server "$case_"
    paths=(/health)
    [ "$case_" = atom-warn ] && paths=(/health /ready)
    for path in "${paths[@]}"; do
      wrk_run "$path" "$WARMUP" >/dev/null
      result=$(wrk_run "$path" "$DURATION")
      echo "$case_$path $result" >>"$PEAK"
      log "round $round: $case_ $path: $result (req/s p50_ms p99_ms server_cpu cpu_busy req_per_cpu_s)"
    done
    stop_server
  done
done

log "latency at half of the median peak: bench/loadgen, $HALF_RUNS runs of ${HALF_DURATION}s each"
# half_load CASE SUFFIX: SUFFIX is "" or "+awake" (the server's CPU kept from idling).
half_load() {
  local case_=$1 suffix=$2 peak rate result
  peak=$(median "$case_/health" 2 "$PEAK")
  rate=$(awk -v p="$peak" 'BEGIN { printf "%.0f", p / 2 }')
  start_server "$case_"
  [ -n "$suffix" ] && keep_server_cpu_awake
  wrk_run /health "$WARMUP" >/dev/null
  for _ in $(seq "$HALF_RUNS"); do
    result=$(loadgen_run /health "$rate")
    echo "$case_/health$suffix $rate $result" >>"$HALF"
    log "$case_$suffix /health at $rate req/s: $result (achieved p50 p99 p99.9 max service_p99 lag_p99)"
  done
  stop_awake
  stop_server
}
for case_ in atom-warn atom-info bare; do
  half_load "$case_" ""
done
for case_ in "${AWAKE_CASES[@]}"; do
  half_load "$case_" +awake
done
ELAPSED=$(($(date +%s) - STARTED))
BUSY_AFTER=$(machine_busy_pct)

# --- report ----------------------------------------------------------------------------------

label() {
  case ${1%+awake} in
    bare/health) echo "bare axum | \`/health\` | none" ;;
    atom-warn/health) echo "atom | \`/health\` | \`ATOM_LOG=warn\`" ;;
    atom-warn/ready) echo "atom | \`/ready\` | \`ATOM_LOG=warn\`" ;;
    atom-info/health) echo "atom | \`/health\` | \`info\` (default) → /dev/null" ;;
  esac
}
per_cpu() { median "$1" 7 "$PEAK"; }
percent() { awk -v f="$1" 'BEGIN { printf "%.0f%%", f * 100 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
verdict() { if awk -v ok="$1" 'BEGIN { exit !ok }'; then echo "**met**"; else echo "**missed**"; fi; }
# The throughput verdict, unless the run was disturbed (`noisy`, below).
peak_verdict() { if [ "$noisy" = 1 ]; then echo "not shown (a disturbed run)"; else verdict "$1"; fi; }

bare_rps=$(median bare/health 2 "$PEAK")
warn_rps=$(median atom-warn/health 2 "$PEAK")
info_rps=$(median atom-info/health 2 "$PEAK")
ratio_warn=$(awk -v a="$warn_rps" -v b="$bare_rps" 'BEGIN { printf "%.2f", a / b }')
ratio_cpu=$(awk -v a="$(per_cpu atom-warn/health)" -v b="$(per_cpu bare/health)" 'BEGIN { printf "%.2f", a / b }')
# Other jobs only ever take throughput away, so the best run of each case is the least
# disturbed one.
best() { awk -v name="$1" -v f="$2" '$1 == name && $f > m { m = $f } END { print m + 0 }' "$PEAK"; }
ratio_best=$(awk -v a="$(best atom-warn/health 2)" -v b="$(best bare/health 2)" 'BEGIN { printf "%.2f", a / b }')
ratio_best_cpu=$(awk -v a="$(best atom-warn/health 7)" -v b="$(best bare/health 7)" 'BEGIN { printf "%.2f", a / b }')
ratio_info=$(awk -v a="$info_rps" -v b="$bare_rps" 'BEGIN { printf "%.2f", a / b }')
# A run the host disturbed: bare axum's rounds more than 10 % apart, or the info log faster
# than warn (its line is extra work; it cannot make a request cheaper). Its ratios are the
# host's as much as the servers': the verdicts say so instead of "met" or "missed".
worst() { awk -v name="$1" -v f="$2" '$1 == name && (m == "" || $f < m) { m = $f } END { print m + 0 }' "$PEAK"; }
bare_spread=$(awk -v hi="$(best bare/health 2)" -v lo="$(worst bare/health 2)" 'BEGIN { printf "%.2f", (lo > 0 ? hi / lo : 0) }')
info_over_warn=$(awk -v w="$warn_rps" -v i="$info_rps" 'BEGIN { printf "%.2f", i / w }')
noisy=$(awk -v s="$bare_spread" -v iw="$info_over_warn" 'BEGIN { print (s > 1.10 || iw > 1.02) }')
half_p99=$(median atom-warn/health 5 "$HALF")
half_p99_info=$(median atom-info/health 5 "$HALF")

REPORT="$TMP/report.md"
{
  echo "Run of \`bench/http.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '-dirty')\`,"
  echo "$ELAPSED s of measuring."
  echo
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
  echo "- other load: CPUs busy at $BUSY_BEFORE of one CPU just before the run and $BUSY_AFTER just after (other developers' jobs share this machine); load average before: $LOAD_BEFORE"
  echo "- pinning: $PINNING"
  echo "- peak: \`wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency\` after a ${WARMUP}s warm-up, $RUNS interleaved rounds, medians (range of req/s in brackets)"
  echo "- half load: \`bench/loadgen --connections $CONNECTIONS --duration $HALF_DURATION --warmup 1\` at half of the case's median peak, $HALF_RUNS runs, medians"
  echo
  echo "### Peak throughput"
  echo
  echo "| server | route | logging | req/s | p50 ms | p99 ms | server CPU | its CPU busy | req per server CPU-s |"
  echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for name in bare/health atom-warn/health atom-warn/ready atom-info/health; do
    printf '| %s | %s (%s) | %s | %s | %s | %s | %s |\n' "$(label "$name")" \
      "$(median "$name" 2 "$PEAK")" "$(range "$name" 2 "$PEAK")" \
      "$(median "$name" 3 "$PEAK")" "$(median "$name" 4 "$PEAK")" \
      "$(percent "$(median "$name" 5 "$PEAK")")" "$(percent "$(median "$name" 6 "$PEAK")")" "$(per_cpu "$name")"
  done
  echo
  echo "### Latency at half of peak (open loop)"
  echo
  echo "| server | route | logging | idle server CPU | rate req/s | achieved | p50 ms | p99 ms | p99.9 ms | max ms | send-to-response p99 ms | client lag p99 ms |"
  echo "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for name in atom-warn/health atom-info/health bare/health "${AWAKE_CASES[@]/%//health+awake}"; do
    idle="may sleep"
    [ "${name%+awake}" = "$name" ] || idle="kept awake"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$name")" "$idle" \
      "$(median "$name" 2 "$HALF")" "$(median "$name" 3 "$HALF")" "$(median "$name" 4 "$HALF")" \
      "$(median "$name" 5 "$HALF")" "$(median "$name" 6 "$HALF")" "$(median "$name" 7 "$HALF")" \
      "$(median "$name" 8 "$HALF")" "$(median "$name" 9 "$HALF")"
  done
  echo
  echo "### Targets"
  echo
  echo "- atom \`/health\` ÷ bare \`/health\` throughput: **$ratio_warn** with \`ATOM_LOG=warn\` ($(pct "$warn_rps" "$bare_rps")), **$ratio_info** with the default info log ($(pct "$info_rps" "$bare_rps")). Target ≥ 0.70: $(peak_verdict "$(awk -v r="$ratio_warn" 'BEGIN { print (r >= 0.7) }')") with warn, $(peak_verdict "$(awk -v r="$ratio_info" 'BEGIN { print (r >= 0.7) }')") with info."
  if [ "$noisy" = 1 ]; then
    why=()
    awk -v s="$bare_spread" 'BEGIN { exit !(s > 1.10) }' &&
      why+=("bare axum's rounds ranged $(range bare/health 2 "$PEAK") req/s (best ÷ worst $bare_spread, more than 1.10)")
    awk -v iw="$info_over_warn" 'BEGIN { exit !(iw > 1.02) }' &&
      why+=("the info log came out at $info_over_warn of warn's throughput, faster than warn, which its extra work cannot make it")
    echo "- caution: the host disturbed this run: ${why[0]}${why[1]:+; and }${why[1]:-}. Ratios from such a run are the host's as much as the servers'."
  fi
  echo "- the same ratio per CPU-second the server used (not lowered by CPU time other jobs take, but still by the caches they evict): **$ratio_cpu** with \`ATOM_LOG=warn\`; best run against best run: $ratio_best in req/s, $ratio_best_cpu per CPU-second."
  min_cpu=$(for name in bare/health atom-warn/health atom-warn/ready atom-info/health; do median "$name" 5 "$PEAK"; done | sort -g | head -1)
  if awk -v c="$min_cpu" 'BEGIN { exit !(c < 0.9) }'; then
    echo "- caution: in some peak cases the server got only $(percent "$min_cpu") of its CPU (median), other jobs the rest, so those req/s are low by about that much; the per-CPU-second figures are less affected, though a neighbour also evicts the server's caches."
  fi
  echo "- the info request log costs $(awk -v w="$warn_rps" -v i="$info_rps" 'BEGIN { printf "%.0f%%", 100 * (1 - i / w) }') of atom's \`/health\` throughput (info ÷ warn = $info_over_warn)."
  echo "- p99 of atom \`/health\` at half of peak: **${half_p99} ms** with warn, ${half_p99_info} ms with info (bare axum: $(median bare/health 5 "$HALF") ms). Target < 1 ms: $(verdict "$(awk -v p="$half_p99" 'BEGIN { print (p < 1) }')") with warn, $(verdict "$(awk -v p="$half_p99_info" 'BEGIN { print (p < 1) }')") with info."
  echo "- from each request's actual send to its whole response (the client's own lag left out, the server's queueing kept in), p99: $(median atom-warn/health 8 "$HALF") ms with warn, $(median atom-info/health 8 "$HALF") ms with info (bare axum: $(median bare/health 8 "$HALF") ms)."
  # The open-loop figure is the server's only if the client kept to its schedule.
  for name in atom-warn/health atom-info/health bare/health "${AWAKE_CASES[@]/%//health+awake}"; do
    if ! awk -v r="$(median "$name" 2 "$HALF")" -v a="$(median "$name" 3 "$HALF")" -v lag="$(median "$name" 9 "$HALF")" \
      'BEGIN { exit !(a >= 0.97 * r && lag < 0.5) }'; then
      echo "- caution, \`$name\`: the client did not keep to its schedule (achieved $(median "$name" 3 "$HALF") of $(median "$name" 2 "$HALF") req/s, its own lag p99 $(median "$name" 9 "$HALF") ms), so that p99 is the machine's as much as the server's."
    fi
  done
  if [ "${#AWAKE_CASES[@]}" -gt 0 ]; then
    awake_p99=$(median atom-warn/health+awake 5 "$HALF")
    echo "- the same with the server's CPU kept from idling: **${awake_p99} ms** for atom (warn), $(median bare/health+awake 5 "$HALF") ms for bare axum: $(verdict "$(awk -v p="$awake_p99" 'BEGIN { print (p < 1) }')")."
  fi
} >"$REPORT"

echo
cat "$REPORT"

if [ -n "$DOC" ]; then
  begin='<!-- bench:results:begin (written by bench/http.sh) -->'
  end='<!-- bench:results:end -->'
  if [ ! -f "$DOC" ] || ! grep -qF "$begin" "$DOC"; then
    mkdir -p "$(dirname "$DOC")"
    printf '# Benchmarks\n\n## Latest results\n\n%s\n%s\n' "$begin" "$end" >>"$DOC"
  fi
  awk -v begin="$begin" -v end="$end" -v report="$REPORT" '
    $0 == begin { print; while ((getline line < report) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }' "$DOC" >"$TMP/doc.md"
  cat "$TMP/doc.md" >"$DOC"
  log "updated ${DOC#"$ROOT"/}"
fi
