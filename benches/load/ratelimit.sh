#!/usr/bin/env bash
# Rate-limit stores under load (run by hand; not a test): memory vs redis vs hybrid.
#
#   benches/load/ratelimit.sh [--no-build] [--duration S] [--reps N]
#
# 1. Speed, one instance: the same route (two policies, per-IP and per-key over 100
#    API clients, limits far above the load) on each store, and on redis with Redis
#    down (on_error: allow; the breaker open): req/s and the gateway's CPU
#    per request (wrk -t1 -c50, interleaved repetitions, medians; gateway pinned to CPU
#    0, wrk, redis-server and the nginx origin on CPU 1).
# 2. Accuracy, N = 1, 2, 3 instances sharing one Redis, loaded at once: combined
#    admission against the ideal (limit x duration + burst - 1 per key), on one hot
#    key (1000/s, burst 1000) and on 1,000 keys (1/s each, burst 5: a key whose next request comes a little after its token does not lose it), for redis and hybrid.
#
# Needs wrk, redis-server, nginx, python3, curl. Ports: BENCH_PORT_BASE (default 18300) and up.
# Output: Markdown tables on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
BASE=${BENCH_PORT_BASE:-18300}
BUILD=1 DURATION=10 REPS=3

die() { echo "ratelimit.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --duration) DURATION=${2:?}; shift ;;
        --reps) REPS=${2:?}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
for t in wrk redis-server nginx python3 curl taskset; do command -v "$t" >/dev/null || die "$t not found"; done
if [ "$BUILD" = 1 ]; then (cd "$ROOT" && cargo build --release --bin gatehouse) >&2; fi

# shellcheck source=benches/load/common.sh
. "$(dirname "$0")/common.sh"
scratch gatehouse-rl

ORIGIN=$BASE REDIS=$((BASE + 1))
# The origin: nginx (run.sh's origin config) on CPU 1.
mkdir -p "$RUN/www" "$RUN/nginx-origin-tmp"
printf ok >"$RUN/www/x"
sed -e "s|@RUNDIR@|$RUN|g" -e "s|@ORIGIN_PORT@|$ORIGIN|g" "$HERE/nginx-origin.conf.in" |
    sed -e 's|location = /small { }|location / { try_files /x =404; }|' >"$RUN/nginx.conf"
taskset -c 1 nginx -p "$RUN" -e "$RUN/nginx.error.log" -c "$RUN/nginx.conf" 2>/dev/null & PIDS+=($!)
taskset -c 1 redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & PIDS+=($!)
sleep 0.5

# config STORE LIMIT_PER_S BURST [REDIS_PORT]: per-ip (far above) and per-key on header X-Key.
config() {
    cat <<EOF
listen: [{ address: "\${GH_LISTEN}" }]
admin: { address: "\${GH_ADMIN}" }
server:
  threads: 1
  pid_file: "$RUN/\${GH_NAME}.pid"
  upgrade_sock: "$RUN/\${GH_NAME}.sock"
  grace_period: 1s
  shutdown_timeout: 1s
  access_log: { format: off }
rate_limits:
  store: $1
  redis: { url: "redis://127.0.0.1:${4:-$REDIS}/0", timeout: 100ms, on_error: allow }
  policies:
    per-ip: { key: client_ip, limit: 100000000, window: 1s }
    per-key: { key: "header:X-Key", limit: $2, window: 1s, burst: $3 }
services:
  origin: { upstreams: [{ address: "127.0.0.1:$ORIGIN" }] }
routes:
  - { name: all, match: { path_prefix: / }, service: origin, rate_limit: [per-ip, per-key] }
EOF
}

start_gw() { # name port conf
    GH_NAME=$1 GH_LISTEN=127.0.0.1:$2 GH_ADMIN=127.0.0.1:$(($2 + 50)) RUST_LOG=warn \
        taskset -a -c 0 "$BIN" -c "$3" 2>>"$RUN/$1.log" &
    STARTED=$!
    PIDS+=("$STARTED")
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$(($2 + 50))/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "gateway $1 did not start (see $RUN/$1.log)"
}
stop_gw() { kill -INT "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

cat >"$RUN/hot.lua" <<'LUA'
wrk.headers["X-Key"] = "hot"
LUA
cat >"$RUN/many.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/x", { ["X-Key"] = "k" .. math.random(1, 1000) })
end
LUA
cat >"$RUN/users.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/x", { ["X-Key"] = "u" .. math.random(1, 100) })
end
LUA

# ---------------------------------------------------------------- 1. speed
log "speed: memory vs redis vs hybrid, $REPS x ${DURATION}s each, interleaved"
HZ=$(getconf CLK_TCK)
for s in memory redis hybrid; do config "$s" 100000000 100000000 >"$RUN/speed-$s.yaml"; done
# Redis down: nothing listens on this port (refused connections), on_error: allow.
config redis 100000000 100000000 $((BASE + 2)) >"$RUN/speed-redis-down.yaml"
: >"$RUN/speed.tsv"
for rep in $(seq 1 "$REPS"); do
    for s in memory redis hybrid redis-down; do
        redis-cli -p "$REDIS" FLUSHALL >/dev/null
        start_gw "speed-$s" $((BASE + 10)) "$RUN/speed-$s.yaml"
        pid=$STARTED
        taskset -c 1 wrk -t1 -c50 -d2s -s "$RUN/users.lua" "http://127.0.0.1:$((BASE + 10))/x" >/dev/null
        t0=$(cpu_ticks "$pid")
        out=$(taskset -c 1 wrk -t1 -c50 -d"${DURATION}s" -s "$RUN/users.lua" "http://127.0.0.1:$((BASE + 10))/x")
        t1=$(cpu_ticks "$pid")
        stop_gw "$pid"
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        printf '%s\t%s\t%s\t%s\n' "$s" "$rps" "$reqs" "$(( (t1 - t0) ))" >>"$RUN/speed.tsv"
        log "  rep $rep $s: $rps req/s"
    done
done
python3 - "$RUN/speed.tsv" "$HZ" <<'PY'
import statistics, sys
hz = int(sys.argv[2])
reps = []  # one dict per repetition: store -> (req/s, CPU µs/req)
for line in open(sys.argv[1]):
    s, rps, reqs, ticks = line.split()
    if s == "memory":
        reps.append({})
    reps[-1][s] = (float(rps), int(ticks) / hz * 1e6 / max(1, int(reqs)))
print("| store | req/s | CPU µs/req | req/s vs memory (same repetition) | CPU/req vs memory |")
print("|---|---:|---:|---:|---:|")
for s in ("memory", "redis", "hybrid", "redis-down"):
    rps = statistics.median(r[s][0] for r in reps)
    cpu = statistics.median(r[s][1] for r in reps)
    ratios = sorted(r[s][0] / r["memory"][0] for r in reps)
    cpus = sorted(r[s][1] / r["memory"][1] for r in reps)
    print(f"| {s} | {rps:,.0f} | {cpu:.1f} | {statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f}) "
          f"| {statistics.median(cpus):.2f}× ({cpus[0]:.2f}–{cpus[-1]:.2f}) |")
down = sorted(r["redis-down"][0] / r["redis"][0] for r in reps)
print(f"\nMedians of {len(reps)} interleaved repetitions; ratios are per repetition (the four run back to back), median (range). "
      f"redis-down: store: redis with nothing listening at its address (on_error: allow): {statistics.median(down):.2f}× "
      f"({down[0]:.2f}–{down[-1]:.2f}) of redis mode's req/s with Redis up.\n")
PY

# ---------------------------------------------------------------- 2. accuracy
log "accuracy: combined admission of N instances, ${DURATION}s per run"
admitted() { # admin port: 200s answered
    curl -fsS "http://127.0.0.1:$1/metrics" |
        awk '/^gatehouse_requests_total\{/ && /status="200"/ {s += $NF} END {print s + 0}'
}
echo "| store | keys | N | load s | admitted | ideal | admitted / ideal |"
echo "|---|---|---:|---:|---:|---:|---:|"
for s in redis hybrid; do
    for shape in hot many; do
        if [ "$shape" = hot ]; then limit=1000 burst=1000 keys=1; else limit=1 burst=5 keys=1000; fi
        config "$s" "$limit" "$burst" >"$RUN/acc.yaml"
        for n in 1 2 3; do
            redis-cli -p "$REDIS" FLUSHALL >/dev/null
            gws=()
            for i in $(seq 1 "$n"); do
                start_gw "acc-$i" $((BASE + 20 + i)) "$RUN/acc.yaml"
                gws+=("$STARTED")
            done
            wpids=()
            t0=$(date +%s.%N)
            for i in $(seq 1 "$n"); do
                taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" -s "$RUN/$shape.lua" \
                    "http://127.0.0.1:$((BASE + 20 + i))/x" >/dev/null &
                wpids+=($!)
            done
            wait "${wpids[@]}"
            t1=$(date +%s.%N)
            total=0
            for i in $(seq 1 "$n"); do total=$((total + $(admitted $((BASE + 70 + i))))); done
            for p in "${gws[@]}"; do stop_gw "$p"; done
            python3 -c "
import sys
a, span = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2])
keys, limit, burst = $keys, $limit, $burst
ideal = keys * (limit * span + burst - 1)
print(f'| $s | $shape ($keys) | $n | {span:.2f} | {a:,} | {ideal:,.0f} | {a/ideal*100:.1f}% |')" "$total" "$t0" "$t1"
        done
    done
done
echo
echo "Ideal: per key, limit x load s + burst - 1 (the most GCRA admits in a run whose first request opens the bucket: burst at once, then one per limit interval), with load s the wall time from starting the wrk runs (${DURATION}s each) to the last one ending, a little longer than the time requests were made. wrk -t1 -c16 per instance; gateway(s) on CPU 0, wrk, redis-server and the origin on CPU 1; $(date -u +%Y-%m-%dT%H:%M:%SZ), $(cd "$ROOT" && git rev-parse --short HEAD)."
