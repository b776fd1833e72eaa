#!/usr/bin/env bash
# The deterministic companion of run.sh: user-space instructions per request, counted by
# valgrind's callgrind, for bare Pingora, Gatehouse passthrough and Gatehouse full
# pipeline, over the same fixed number of requests to the same nginx origin. It counts
# what the proxy process executes itself (not the kernel, not time), so it repeats to
# within a fraction of a percent whatever else this shared machine is doing: use it to
# judge a code change; use run.sh for CPU time and req/s beside nginx and HAProxy.
#
#   benches/load/instructions.sh [--requests N] [--no-build] [--only LIST] [--body small|large]
#
# --body: the response body each request fetches: small (2 bytes, the default) or large
# (16 KiB, where the per-chunk work of reading, filtering and writing a body shows).
# --only: a comma-separated subset of bare-pingora,bare-timeouts,gh-pass,gh-full (the
# ratios need bare-pingora and gh-pass among them), or gh-traced (not run by default):
# gh-full with `tracing:` at sample_ratio 1.0, exporting every request's spans to the
# nginx origin as its OTLP collector; the exporter thread's work is counted too.
# CALLGRIND_EXTRA: more callgrind options, e.g. "--cache-sim=yes --branch-sim=yes" for
# simulated cache misses and branch mispredictions (the totals: `grep totals:` in the
# kept profiles).
#
# The callgrind profiles are kept in benches/load/results/callgrind/ (git-ignored):
#   callgrind_annotate --inclusive=yes benches/load/results/callgrind/callgrind.gh-pass.*.1
#
# Needs valgrind, nginx, curl and oha (cargo install oha --locked). Counting starts
# after a warm-up (connections open, caches filled) and covers exactly N requests over
# 10 keep-alive connections. Ports: BENCH_PORT_BASE (default 18180) and up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT_BASE=${BENCH_PORT_BASE:-18180}
GATEHOUSE_BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
BARE_BIN=${BARE_BIN:-$ROOT/target/release/examples/bare_proxy}
N=3000 BUILD=1 ONLY=bare-pingora,bare-timeouts,gh-pass,gh-full BODY=small

die() { echo "instructions.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --requests) N=${2:?--requests N}; shift ;;
        --no-build) BUILD=0 ;;
        --only) ONLY=${2:?--only LIST}; shift ;;
        --body) BODY=${2:?--body small|large}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
case $BODY in small|large) ;; *) die "--body: small or large, not $BODY" ;; esac
for tool in valgrind callgrind_control nginx curl oha; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
if [ "$BUILD" = 1 ]; then
    log "cargo build --release --bin gatehouse --example bare_proxy"
    (cd "$ROOT" && cargo build --release --bin gatehouse --example bare_proxy) >&2
fi

KEEP=$HERE/results/callgrind
mkdir -p "$KEEP"
RUNDIR=$(mktemp -d /tmp/gatehouse-instr.XXXXXX)
PIDS=()
cleanup() {
    # nginx master first, gracefully (its worker exits with it), then the rest.
    if [ -f "$RUNDIR/nginx-origin.pid" ]; then
        kill -TERM "$(cat "$RUNDIR/nginx-origin.pid")" 2>/dev/null || true
        sleep 0.5
    fi
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUNDIR"
}
trap cleanup EXIT

wait_http() { # pid port [header]
    local _
    for _ in $(seq 1 600); do
        kill -0 "$1" 2>/dev/null || return 1
        curl -fsS -o /dev/null --max-time 2 ${3:+-H "$3"} "http://127.0.0.1:$2/small" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

ORIGIN_PORT=$PORT_BASE
mkdir -p "$RUNDIR/www" "$RUNDIR/nginx-origin-tmp"
printf 'ok' >"$RUNDIR/www/small"
head -c 16384 /dev/zero | tr '\0' 'x' >"$RUNDIR/www/large"
sed -e "s|@RUNDIR@|$RUNDIR|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
    "$HERE/nginx-origin.conf.in" >"$RUNDIR/nginx-origin.conf"
nginx -p "$RUNDIR" -e "$RUNDIR/nginx-origin.error.log" -c "$RUNDIR/nginx-origin.conf" \
    >/dev/null 2>"$RUNDIR/origin.log" &
wait_http "$!" "$ORIGIN_PORT" || die "origin did not come up ($(cat "$RUNDIR/origin.log"))"

BENCH_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_JWT_SECRET
TOKEN=$("$GATEHOUSE_BIN" token --secret-env BENCH_JWT_SECRET --sub bench --ttl 1h)
AUTH="Authorization: Bearer $TOKEN"

# measure NAME PORT [VAR=value ...] BIN ARGS...: instructions per request of BIN.
measure() {
    local name=$1 port=$2 pid out vars=()
    shift 2
    [[ ,$ONLY, == *,$name,* ]] || return 0
    while [[ $1 == *=* ]]; do vars+=("$1"); shift; done
    out=$RUNDIR/callgrind.$name
    env ${vars[@]+"${vars[@]}"} valgrind --tool=callgrind --instr-atstart=no ${EXTRA[@]+"${EXTRA[@]}"} \
        --callgrind-out-file="$out.%p" "$@" >/dev/null 2>"$RUNDIR/$name.log" &
    pid=$!
    PIDS+=("$pid")
    wait_http "$pid" "$port" "$AUTH" || die "$name did not come up (see $RUNDIR/$name.log)"
    local url="http://127.0.0.1:$port/$BODY"
    oha -n 500 -c 10 --no-tui -H "$AUTH" "$url" >/dev/null # warm-up, not counted
    callgrind_control -i on "$pid" >/dev/null 2>&1
    oha -n "$N" -c 10 --no-tui -H "$AUTH" "$url" >"$RUNDIR/$name.oha"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    local _
    for _ in $(seq 1 100); do # the dump is written asynchronously
        grep -qs '^totals:' "$out".*.1 && break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local ok
    ok=$(awk '/\[200\]/ {print $2}' "$RUNDIR/$name.oha")
    [ "${ok:-0}" = "$N" ] || die "$name: $N requests sent, ${ok:-0} answered 200 (see $RUNDIR/$name.oha)"
    local total
    total=$(awk '/^totals:/ {s += $2} END {print s + 0}' "$out".*.1)
    rm -f "$KEEP"/callgrind."$name".*
    cp "$out".*.1 "$KEEP"/
    [ "$total" -gt 0 ] || die "$name: no callgrind totals"
    echo "$name $total"
}

read -ra EXTRA <<<"${CALLGRIND_EXTRA:-}"
GH_ENV=(GH_ORIGIN="127.0.0.1:$ORIGIN_PORT" GH_RUNDIR="$RUNDIR" GH_WORK_STEALING=false)
log "counting $N requests per target under callgrind (a minute or two each)"
{
    measure bare-pingora $((PORT_BASE + 3)) BARE_WORK_STEALING=false \
        "$BARE_BIN" "127.0.0.1:$ORIGIN_PORT" "127.0.0.1:$((PORT_BASE + 3))"
    # Diagnostic: bare Pingora with Gatehouse's default peer timeouts (Pingora's timers).
    measure bare-timeouts $((PORT_BASE + 6)) BARE_WORK_STEALING=false BARE_TIMEOUTS=1 \
        "$BARE_BIN" "127.0.0.1:$ORIGIN_PORT" "127.0.0.1:$((PORT_BASE + 6))"
    measure gh-pass $((PORT_BASE + 4)) "${GH_ENV[@]}" GH_LISTEN="127.0.0.1:$((PORT_BASE + 4))" \
        GH_ADMIN="127.0.0.1:$((PORT_BASE + 54))" \
        "$GATEHOUSE_BIN" -c "$HERE/gatehouse-passthrough.yaml"
    measure gh-full $((PORT_BASE + 5)) "${GH_ENV[@]}" GH_LISTEN="127.0.0.1:$((PORT_BASE + 5))" \
        GH_ADMIN="127.0.0.1:$((PORT_BASE + 55))" \
        "$GATEHOUSE_BIN" -c "$HERE/gatehouse-full.yaml"
    if [[ ,$ONLY, == *,gh-traced,* ]]; then
        { cat "$HERE/gatehouse-full.yaml"
          printf '\ntracing: { otlp_endpoint: "http://127.0.0.1:%s/v1/traces", sample_ratio: 1.0 }\n' "$ORIGIN_PORT"
        } | sed 's/gatehouse-full\./gatehouse-traced./g' >"$RUNDIR/gatehouse-traced.yaml"
    fi
    measure gh-traced $((PORT_BASE + 7)) "${GH_ENV[@]}" GH_LISTEN="127.0.0.1:$((PORT_BASE + 7))" \
        GH_ADMIN="127.0.0.1:$((PORT_BASE + 57))" \
        "$GATEHOUSE_BIN" -c "$RUNDIR/gatehouse-traced.yaml"
} >"$RUNDIR/totals"

echo "| target | instructions/request | vs bare Pingora | vs gh-pass |"
echo "|---|---:|---:|---:|"
awk -v n="$N" '
    { name[NR] = $1; per[NR] = $2 / n; idx[$1] = NR }
    END {
        for (i = 1; i <= NR; i++) {
            b = ("bare-pingora" in idx) ? per[idx["bare-pingora"]] : 0
            p = ("gh-pass" in idx) ? per[idx["gh-pass"]] : 0
            printf "| %s | %d | %s | %s |\n", name[i], per[i],
                b ? sprintf("%.2f×", per[i] / b) : "–",
                ((name[i] == "gh-full" || name[i] == "gh-traced") && p) ? sprintf("%.2f×", per[i] / p) : "–"
        }
    }' "$RUNDIR/totals"
echo
echo "valgrind --tool=callgrind, user space only, $N requests for /$BODY over 10 keep-alive connections after a 500-request warm-up; $(valgrind --version)."
