#!/usr/bin/env bash
# Gatehouse load benchmark: nginx, HAProxy, bare Pingora, Gatehouse (passthrough),
# Gatehouse (full pipeline) and nginx as a JWT + limit_req gateway (njs) in front of one
# fixed nginx origin, all on loopback.
#
#   benches/load/run.sh [--quick] [--large] [--huge] [options]
#
# Proxies under test run pinned to CPU 0 (all threads); the origin and the load
# generators run on CPU 1. wrk (closed loop, 50 connections, 1 thread) gives
# throughput and CPU per request; oha at a fixed rate (50% of the slowest target's wrk
# throughput, the same for every target) with --latency-correction gives p50/p99/p99.9.
# Targets are interleaved (A B C ..., A B C ..., ...); the table shows medians.
#
# Options:
#   --quick            1 repetition, 5 s runs (smoke test)
#   --large            also measure the 16 KiB body (second table): --bodies small,large
#   --huge             also measure the 64 KiB body (its own table): --bodies small,huge
#   --bodies LIST      comma-separated subset of small (2 B, the default), large (16 KiB),
#                      huge (64 KiB): one table each, and the side-by-side pairs for each
#   --reps N           repetitions (default 3; --quick: 1)
#   --duration S       seconds per measured run (default 10; --quick: 5)
#   --warmup S         wrk warm-up before each measured wrk run (default 3; --quick: 1)
#   --rate N           oha request rate (default: 50% of the slowest wrk median)
#   --targets LIST     comma-separated subset of: nginx,haproxy,bare,gh-pass,gh-full,
#                      nginx-full (nginx + njs: HS256 JWT, two limit_req zones, JSON
#                      access log; the gateway built on nginx, paired with gh-full)
#                      (also bare-timeouts: bare Pingora with Gatehouse's peer timeouts;
#                      gh-tls: the passthrough to the origin over HTTPS, verified, pooled,
#                      paired side by side with gh-pass; gh-key: gh-full with an API key
#                      among 10,000 consumers instead of the JWT, paired with gh-full)
#   --variant L=BIN    also run gh-pass and gh-full with another gatehouse binary,
#                      labelled L (repeatable; for build-profile comparisons)
#   --work-stealing B  true|false: Pingora's work-stealing runtime, for bare Pingora and
#                      both Gatehouse targets alike (default: false, Gatehouse's default;
#                      true is Pingora's)
#   --ci-profile       build and run the `ci` profile the tests use (no LTO, 16 codegen
#                      units), for bare Pingora and Gatehouse alike (default: the
#                      release profile, fat LTO and one codegen unit: the production
#                      build). --lean is accepted as the release profile's old name.
#                      The release profile is profile-guided (pgo/gatehouse.profdata):
#                      GATEHOUSE_PGO=off in the environment builds bare Pingora and
#                      Gatehouse alike without it, into target/nopgo/.
#   --system-malloc    build bare Pingora and Gatehouse alike without the default
#                      `mimalloc` feature (glibc's malloc)
#   --no-build         do not run cargo build first
#   --no-oha           skip the fixed-rate latency phase (throughput and CPU only)
#   --pairs N          side-by-side repetitions (default 6; 0 = none), for each body size:
#                      gh-pass with bare Pingora, gh-full with gh-pass, gh-full with
#                      nginx-full, and each --variant's gh-pass with the current gh-pass
#                      (each pair when both of its targets run), loaded at the same time
#                      (wrk -c25 each) on the same CPU 0, so both see the same machine; the CPU/req
#                      ratio of a pair moves ~1% between repetitions where the interleaved
#                      runs move 10-20% (it is higher, though: the two share CPU 0's caches).
#                      Each repetition starts both anew on two ports that swap every
#                      repetition (a listening port alone can cost ~1%): use an even N
#   --perf LIST        `perf record -e cpu-clock --call-graph dwarf` the measured wrk
#                      runs of these targets (comma-separated names, e.g. gh-pass,gh-full)
#                      into results/perf-NAME-BODY-REP.data; their figures then include
#                      perf's overhead (profile.sh does this and summarises)
#   -h, --help
#
# Environment: BENCH_PORT_BASE (default 18080; the script uses the 100 ports from
# there), BENCH_RESULTS (default benches/load/results), GATEHOUSE_BIN, BARE_BIN.
#
# Output: a Markdown table on stdout and in results/latest.md; raw logs in
# results/*.log (git-ignored).
# shellcheck disable=SC2086 # pid lists and VAR=value lists are word-split on purpose
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS=${BENCH_RESULTS:-$HERE/results}
PORT_BASE=${BENCH_PORT_BASE:-18080}
GATEHOUSE_BIN_ENV=${GATEHOUSE_BIN:-}
BARE_BIN_ENV=${BARE_BIN:-}

QUICK=0 LARGE=0 HUGE=0 BODY_LIST='' LEAN=0 SYSTEM_MALLOC=0 BUILD=1 NO_OHA=0 REPS='' DURATION='' WARMUP='' RATE='' PERF_TARGET=''
PAIRS=''
TARGET_LIST=nginx,haproxy,bare,gh-pass,gh-full,nginx-full
VARIANTS=()
WORK_STEALING=false

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --large) LARGE=1 ;;
        --huge) HUGE=1 ;;
        --bodies) BODY_LIST=${2:?--bodies LIST}; shift ;;
        --reps) REPS=${2:?--reps N}; shift ;;
        --duration) DURATION=${2:?--duration S}; shift ;;
        --warmup) WARMUP=${2:?--warmup S}; shift ;;
        --rate) RATE=${2:?--rate N}; shift ;;
        --targets) TARGET_LIST=${2:?--targets LIST}; shift ;;
        --variant) VARIANTS+=("${2:?--variant LABEL=BIN}"); shift ;;
        --work-stealing) WORK_STEALING=${2:?--work-stealing true|false}; shift ;;
        --lean) ;;
        --ci-profile) LEAN=1 ;;
        --system-malloc) SYSTEM_MALLOC=1 ;;
        --no-build) BUILD=0 ;;
        --no-oha) NO_OHA=1 ;;
        --pairs) PAIRS=${2:?--pairs N}; shift ;;
        --perf) PERF_TARGET=${2:?--perf LIST}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '/^# shellcheck/d; $d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
if [ "$LEAN" = 1 ]; then
    CARGO_PROFILE=(--profile ci) PROFILE_DIR=ci
else
    CARGO_PROFILE=(--release) PROFILE_DIR=release
fi
if [ "$SYSTEM_MALLOC" = 1 ]; then
    CARGO_PROFILE+=(--no-default-features) ALLOCATOR=glibc
else
    ALLOCATOR=mimalloc
fi
# The release profile is built with the committed PGO profile (scripts/rustc-pgo) unless
# GATEHOUSE_PGO=off, which builds into target/nopgo/ (Cargo would not rebuild target/release/
# for a wrapper's flags); binaries given in GATEHOUSE_BIN/BARE_BIN are whatever they were
# built as.
TARGET_DIR=$ROOT/target
if [ "$PROFILE_DIR" != release ] || [ ! -f "$ROOT/pgo/gatehouse.profdata" ]; then
    PGO=off
elif [ "${GATEHOUSE_PGO:-on}" = off ]; then
    PGO=off TARGET_DIR=$ROOT/target/nopgo
else
    PGO=on
fi
GATEHOUSE_BIN=${GATEHOUSE_BIN_ENV:-$TARGET_DIR/$PROFILE_DIR/gatehouse}
BARE_BIN=${BARE_BIN_ENV:-$TARGET_DIR/$PROFILE_DIR/examples/bare_proxy}
case $WORK_STEALING in true|false) ;; *) die "--work-stealing wants true or false" ;; esac
# The same runtime for every Rust proxy: the configs and bare_proxy read these.
export GH_WORK_STEALING=$WORK_STEALING BARE_WORK_STEALING=$WORK_STEALING
if [ "$QUICK" = 1 ]; then
    REPS=${REPS:-1} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1} PAIRS=${PAIRS:-1}
else
    REPS=${REPS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-3} PAIRS=${PAIRS:-6}
fi
[[ $PAIRS =~ ^[0-9]+$ ]] || die "--pairs wants a number"
for n in "$REPS" "$DURATION" "$WARMUP" ${RATE:+"$RATE"}; do
    [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || die "not a positive integer: $n"
done
[[ $PORT_BASE =~ ^[0-9]+$ && $PORT_BASE -ge 1024 && $PORT_BASE -le 65400 ]] ||
    die "BENCH_PORT_BASE must be 1024..65400"
# The body sizes measured, in this order: --bodies, else small; --large and --huge add
# small and theirs.
want_bodies=,${BODY_LIST:-small},
[ "$LARGE" = 1 ] && want_bodies+=small,large,
[ "$HUGE" = 1 ] && want_bodies+=small,huge,
IFS=, read -r -a listed <<<"${BODY_LIST:-small}"
for b in "${listed[@]}"; do
    case $b in small|large|huge) ;; *) die "--bodies: unknown body $b (small,large,huge)" ;; esac
done
bodies=()
for b in small large huge; do [[ $want_bodies == *",$b,"* ]] && bodies+=("$b"); done
[ ${#bodies[@]} -gt 0 ] || die "--bodies: no body size"

# ---------------------------------------------------------------- tools
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found. $2"
}
APT="install it with: apt-get install -y nginx-light haproxy wrk"
need nginx "$APT"
need haproxy "$APT"
need wrk "$APT"
need taskset "(util-linux) apt-get install -y util-linux"
need curl "apt-get install -y curl"
need ss "apt-get install -y iproute2"
need python3 "apt-get install -y python3"
need timeout "(coreutils)"
need base64 "(coreutils)"
NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so # nginx-full.conf.in loads it
if [[ ,$TARGET_LIST, == *,nginx-full,* ]] && [ ! -f "$NJS_MODULE" ]; then
    die "nginx-full needs njs ($NJS_MODULE): apt-get install -y libnginx-mod-http-js"
fi
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (proxy on CPU 0, origin and load on CPU 1)"
if [ -n "$PERF_TARGET" ]; then need perf "apt-get install -y linux-perf"; fi
OHA=$(command -v oha || true)
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA=$HOME/.cargo/bin/oha
if [ "$NO_OHA" = 1 ]; then
    OHA=
    log "--no-oha: no fixed-rate phase; p50/p99 are wrk's closed-loop figures"
elif [ -z "$OHA" ]; then
    log "WARNING: oha not found (cargo install oha --locked); latency falls back to wrk --latency"
    log "WARNING: wrk is closed-loop, so its p50/p99 suffer from coordinated omission"
fi

if [ "$BUILD" = 1 ]; then
    need cargo "install Rust (rustup)"
    log "cargo build ${CARGO_PROFILE[*]} --bin gatehouse --example bare_proxy"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build "${CARGO_PROFILE[@]}" --bin gatehouse --example bare_proxy) >&2
fi

# What was built, recorded now (the tree may move on during a long run).
GIT_REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes in src/ or Cargo.toml')"

# ---------------------------------------------------------------- targets
# Parallel arrays, one entry per target.
T_NAME=() T_KIND=() T_PORT=() T_BIN=() T_CONF=()
ORIGIN_PORT=$PORT_BASE
next_port=$((PORT_BASE + 1))
add_target() { # name kind bin conf
    T_NAME+=("$1") T_KIND+=("$2") T_BIN+=("$3") T_CONF+=("$4") T_PORT+=("$next_port")
    next_port=$((next_port + 1))
}
IFS=, read -r -a wanted <<<"$TARGET_LIST"
for t in "${wanted[@]}"; do
    case $t in
        nginx) add_target nginx nginx nginx "$HERE/nginx-proxy.conf.in" ;;
        nginx-full) add_target nginx-full nginx nginx "$HERE/nginx-full.conf.in" ;;
        haproxy) add_target haproxy haproxy haproxy "$HERE/haproxy.cfg.in" ;;
        bare) add_target bare-pingora bare "$BARE_BIN" - ;;
        # Diagnostic: bare Pingora with Gatehouse's default peer timeouts.
        bare-timeouts) add_target bare-timeouts bare "$BARE_BIN" BARE_TIMEOUTS=1 ;;
        gh-pass) add_target gh-pass gatehouse "$GATEHOUSE_BIN" "$HERE/gatehouse-passthrough.yaml" ;;
        gh-full) add_target gh-full gatehouse "$GATEHOUSE_BIN" "$HERE/gatehouse-full.yaml" ;;
        gh-tls) add_target gh-tls gatehouse "$GATEHOUSE_BIN" "$HERE/gatehouse-tls-upstream.yaml" ;;
        gh-key) add_target gh-key gatehouse "$GATEHOUSE_BIN" "$HERE/gatehouse-apikey.yaml" ;;
        *) die "unknown target $t (nginx,haproxy,bare,gh-pass,gh-full,nginx-full,bare-timeouts,gh-tls,gh-key)" ;;
    esac
done
for v in ${VARIANTS[@]+"${VARIANTS[@]}"}; do
    label=${v%%=*} bin=${v#*=}
    [[ $v == *=* && -n $label && $label =~ ^[A-Za-z0-9._-]+$ ]] || die "--variant wants LABEL=BIN, got $v"
    [ -x "$bin" ] || die "--variant $label: $bin is not an executable"
    add_target "gh-pass[$label]" gatehouse "$bin" "$HERE/gatehouse-passthrough.yaml"
    add_target "gh-full[$label]" gatehouse "$bin" "$HERE/gatehouse-full.yaml"
done
NT=${#T_NAME[@]}
[ "$NT" -gt 0 ] || die "no targets"
for i in $(seq 0 $((NT - 1))); do
    case ${T_KIND[$i]} in
        bare|gatehouse) [ -x "${T_BIN[$i]}" ] || die "${T_BIN[$i]} not built (drop --no-build, or cargo build --release --bin gatehouse --example bare_proxy)" ;;
    esac
done
if [ -n "$PERF_TARGET" ]; then
    IFS=, read -r -a perf_wanted <<<"$PERF_TARGET"
    for p in "${perf_wanted[@]}"; do
        found=0
        for n in "${T_NAME[@]}"; do [ "$n" = "$p" ] && found=1; done
        [ "$found" = 1 ] || die "--perf $p: not a target of this run (${T_NAME[*]})"
    done
fi
perf_this() { [[ ,$PERF_TARGET, == *",$1,"* ]]; }

# The two ports of the side-by-side pairs' fresh instances (see measure_pair).
PAIR_PORTS=("$next_port" $((next_port + 1)))

# The origin's HTTPS port (only with the gh-tls target).
ORIGIN_TLS_PORT=$((PORT_BASE + 99))

# Every port this run listens on must be free: the origin, the targets, the pair ports,
# the gatehouse admin ports (listening port + 50).
PORTS=("$ORIGIN_PORT" "$ORIGIN_TLS_PORT")
for i in $(seq 0 $((NT - 1))); do
    PORTS+=("${T_PORT[$i]}")
    [ "${T_KIND[$i]}" = gatehouse ] && PORTS+=($((T_PORT[i] + 50)))
done
PORTS+=("${PAIR_PORTS[@]}" $((PAIR_PORTS[0] + 50)) $((PAIR_PORTS[1] + 50)))
busy=$(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u)
for p in "${PORTS[@]}"; do
    if grep -qx "$p" <<<"$busy"; then
        die "port $p is busy (ss -ltnp | grep :$p); stop whatever holds it or set BENCH_PORT_BASE"
    fi
done

# ---------------------------------------------------------------- processes
mkdir -p "$RESULTS"
RUNDIR=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
STAMP=$(date +%Y%m%d-%H%M%S)
MEAS=$RESULTS/measurements.log
: >"$MEAS"
PIDS=()     # everything started, for the trap
T_PID=()    # the process measured, per target
T_PIDS=()   # space-separated: every process of the target (nginx: master + worker)
LOADPID=    # the load generator currently running
LOADPID2=   # the second one of a side-by-side pair

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in $LOADPID $LOADPID2; do kill "$p" 2>/dev/null || true; done
    # SIGINT is the fast stop of nginx and Pingora (Pingora's SIGTERM would wait out its
    # grace period); HAProxy in -db mode stays up on SIGINT, hence SIGTERM, then SIGKILL.
    local sig alive
    for sig in INT TERM KILL; do
        alive=0
        for pid in ${PIDS[@]+"${PIDS[@]}"}; do
            kill -0 "$pid" 2>/dev/null && { alive=1; kill -"$sig" "$pid" 2>/dev/null || true; }
        done
        [ "$alive" = 0 ] && break
        for _ in $(seq 1 30); do
            alive=0
            for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        [ "$alive" = 0 ] && break
    done
    wait 2>/dev/null || true
    rm -rf "$RUNDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fill() { # template out port [rundir, default $RUNDIR]
    sed -e "s|@RUNDIR@|${4:-$RUNDIR}|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" -e "s|@PORT@|$3|g" "$1" >"$2"
}

wait_http() { # pid port path [header]
    local i pid=$1
    shift
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -fsS -o /dev/null --max-time 1 ${3:+-H "$3"} "http://127.0.0.1:$1$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Run copies of the binaries: a cargo build elsewhere cannot swap them mid-run.
mkdir -p "$RUNDIR/bin"
for i in $(seq 0 $((NT - 1))); do
    case ${T_KIND[$i]} in
        bare|gatehouse)
            copy=$RUNDIR/bin/$(echo "${T_NAME[$i]}" | tr -c 'A-Za-z0-9._\n-' _)
            cp "${T_BIN[$i]}" "$copy"
            T_BIN[i]=$copy
            ;;
    esac
done
GATEHOUSE_BIN_ORIG=$GATEHOUSE_BIN
cp "$GATEHOUSE_BIN" "$RUNDIR/bin/gatehouse-token"
GATEHOUSE_BIN=$RUNDIR/bin/gatehouse-token

# The origin's files.
mkdir -p "$RUNDIR/www" "$RUNDIR/nginx-origin-tmp"
printf ok >"$RUNDIR/www/small"
head -c 16384 /dev/zero | tr '\0' x >"$RUNDIR/www/large"
head -c 65536 /dev/zero | tr '\0' x >"$RUNDIR/www/huge"

if [[ ,$TARGET_LIST, == *,gh-tls,* ]]; then
    # The origin also over HTTPS, with a CA and a certificate for origin.bench made now.
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -keyout "$RUNDIR/origin-ca.key" -out "$RUNDIR/origin-ca.crt" -subj /CN=bench-ca &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$RUNDIR/origin.key" -out "$RUNDIR/origin.csr" -subj /CN=origin.bench &&
            printf 'subjectAltName=DNS:origin.bench\nbasicConstraints=CA:FALSE\n' >"$RUNDIR/origin.ext" &&
            openssl x509 -req -in "$RUNDIR/origin.csr" -CA "$RUNDIR/origin-ca.crt" \
                -CAkey "$RUNDIR/origin-ca.key" -CAcreateserial -days 2 \
                -extfile "$RUNDIR/origin.ext" -out "$RUNDIR/origin.crt"
    } >/dev/null 2>&1 || die "openssl could not make the origin's certificate"
    cat >"$RUNDIR/origin-tls.conf" <<EOF
server {
    listen 127.0.0.1:$ORIGIN_TLS_PORT ssl backlog=4096;
    ssl_certificate $RUNDIR/origin.crt;
    ssl_certificate_key $RUNDIR/origin.key;
    root $RUNDIR/www;
    location = /small { }
    location = /large { }
    location = /huge { }
}
EOF
fi
fill "$HERE/nginx-origin.conf.in" "$RUNDIR/nginx-origin.conf" -
taskset -c 1 nginx -p "$RUNDIR" -e "$RUNDIR/nginx-origin.error.log" -c "$RUNDIR/nginx-origin.conf" \
    2>"$RESULTS/origin.log" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_http "$ORIGIN_PID" "$ORIGIN_PORT" /small || die "origin did not come up (see $RESULTS/origin.log)"
ORIGIN_PIDS="$ORIGIN_PID $(pgrep -P "$ORIGIN_PID" | tr '\n' ' ')"

export BENCH_JWT_SECRET
BENCH_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN=$(BENCH_JWT_SECRET=$BENCH_JWT_SECRET "$GATEHOUSE_BIN" token --secret-env BENCH_JWT_SECRET --sub bench --ttl 1h)
AUTH="Authorization: Bearer $TOKEN"
# Tokens that JWT auth must refuse (check_jwt_auth): signed with another secret; the
# bench token's header and signature over another payload; alg "none", no signature.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
BAD_SIG_TOKEN=$(BENCH_OTHER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    "$GATEHOUSE_BIN" token --secret-env BENCH_OTHER_SECRET --sub bench --ttl 1h)
TOKEN_PAYLOAD=${TOKEN#*.} TOKEN_PAYLOAD=${TOKEN_PAYLOAD%%.*}
TAMPERED_TOKEN=${TOKEN%%.*}.$(printf '{"sub":"admin","exp":%d}' $(($(date +%s) + 3600)) | b64url).${TOKEN##*.}
NONE_TOKEN=$(printf '{"alg":"none","typ":"JWT"}' | b64url).$TOKEN_PAYLOAD.
# gh-key: 10,000 consumers, one of which holds the whole Authorization value as its key.
export BENCH_CONSUMERS_FILE=$RUNDIR/consumers.yaml
{
    echo "bench: { groups: [bench], api_keys: [\"$("$GATEHOUSE_BIN" hash-key "Bearer $TOKEN")\"] }"
    for n in $(seq 1 9999); do
        printf 'c%d: { api_keys: ["%064x"] }\n' "$n" "$n"
    done
} >"$BENCH_CONSUMERS_FILE"

# Start target i (bare Pingora or Gatehouse) on port in the background, pinned to CPU 0,
# stderr appended to out (appending, so it can be truncated between runs: the full
# pipeline's JSON access log really gets written); Gatehouse keeps its pid file and
# upgrade socket in rundir.
launch_rust() { # i port rundir out
    local i=$1 port=$2 rundir=$3 out=$4
    case ${T_KIND[$i]} in
        bare)
            # shellcheck disable=SC2046 # T_CONF holds VAR=value settings or "-"
            env $( [ "${T_CONF[$i]}" = - ] || echo "${T_CONF[$i]}") \
                taskset -a -c 0 "${T_BIN[$i]}" "127.0.0.1:$ORIGIN_PORT" "127.0.0.1:$port" 2>>"$out" &
            ;;
        gatehouse)
            mkdir -p "$rundir"
            env GH_LISTEN="127.0.0.1:$port" GH_ADMIN="127.0.0.1:$((port + 50))" \
                GH_ORIGIN="127.0.0.1:$ORIGIN_PORT" GH_RUNDIR="$rundir" \
                GH_ORIGIN_TLS="127.0.0.1:$ORIGIN_TLS_PORT" GH_ORIGIN_CA="$RUNDIR/origin-ca.crt" \
                taskset -a -c 0 "${T_BIN[$i]}" -c "${T_CONF[$i]}" 2>>"$out" &
            ;;
        *) die "${T_NAME[$i]} is neither bare Pingora nor Gatehouse" ;;
    esac
}

# Start nginx target i (nginx, nginx-full) on port in the background, master and worker
# pinned to CPU 0, its config, pid, logs (nginx-full: the access log) and temp files in
# rundir, stderr appended to out.
launch_nginx() { # i port rundir out
    local i=$1 port=$2 rundir=$3 out=$4 base
    base=$(basename "${T_CONF[$i]}" .conf.in) # nginx-proxy, nginx-full
    mkdir -p "$rundir/$base-tmp"
    cp "$HERE/jwt.js" "$rundir/jwt.js"
    fill "${T_CONF[$i]}" "$rundir/$base.conf" "$port" "$rundir"
    nginx -t -q -p "$rundir" -e "$rundir/$base.error.log" -c "$rundir/$base.conf" >>"$out" 2>&1 ||
        die "${T_NAME[$i]}: nginx rejected $rundir/$base.conf (see $out)"
    taskset -a -c 0 nginx -p "$rundir" -e "$rundir/$base.error.log" -c "$rundir/$base.conf" \
        2>>"$out" &
}

# JWT auth in front of target i on port: the bench token gets 200; a token signed with
# another secret, a tampered payload, alg "none" and no token get 401.
check_jwt_auth() { # i port
    local name=${T_NAME[$1]} port=$2 c label tok want code
    for c in "valid token:$TOKEN:200" "token signed with another secret:$BAD_SIG_TOKEN:401" \
        "tampered payload:$TAMPERED_TOKEN:401" "alg none token:$NONE_TOKEN:401" "no token::401"; do
        label=${c%%:*} tok=${c#*:} want=${c##*:}
        tok=${tok%:*}
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 \
            ${tok:+-H "Authorization: Bearer $tok"} "http://127.0.0.1:$port/small" 2>/dev/null) || true
        [ "$code" = "$want" ] ||
            die "$name: JWT auth check failed: $label got HTTP ${code:-none}, want $want (is JWT auth on, with BENCH_JWT_SECRET?)"
    done
}

for i in $(seq 0 $((NT - 1))); do
    name=${T_NAME[$i]} port=${T_PORT[$i]} slug=${T_NAME[$i]//[\[\]]/_}
    out=$RESULTS/$slug.stderr.log
    case ${T_KIND[$i]} in
        nginx)
            : >"$out"
            launch_nginx "$i" "$port" "$RUNDIR" "$out"
            ;;
        haproxy)
            fill "${T_CONF[$i]}" "$RUNDIR/haproxy.cfg" "$port"
            haproxy -c -q -f "$RUNDIR/haproxy.cfg" >"$out" 2>&1 || die "haproxy config invalid (see $out)"
            taskset -a -c 0 haproxy -db -f "$RUNDIR/haproxy.cfg" 2>"$out" &
            ;;
        bare)
            : >"$out"
            launch_rust "$i" "$port" "$RUNDIR/$slug" "$out"
            ;;
        gatehouse)
            mkdir -p "$RUNDIR/$slug"
            env GH_LISTEN="127.0.0.1:$port" GH_ADMIN="127.0.0.1:$((port + 50))" \
                GH_ORIGIN="127.0.0.1:$ORIGIN_PORT" GH_RUNDIR="$RUNDIR/$slug" \
                GH_ORIGIN_TLS="127.0.0.1:$ORIGIN_TLS_PORT" GH_ORIGIN_CA="$RUNDIR/origin-ca.crt" \
                "${T_BIN[$i]}" -c "${T_CONF[$i]}" -t >/dev/null 2>"$out" ||
                die "$name: config rejected (see $out)"
            launch_rust "$i" "$port" "$RUNDIR/$slug" "$out"
            ;;
    esac
    pid=$!
    PIDS+=("$pid")
    T_PID+=("$pid")
    wait_http "$pid" "$port" /small "$AUTH" || die "$name did not come up on port $port (see $out)"
    if [ "${T_KIND[$i]}" = nginx ]; then
        T_PIDS+=("$pid $(pgrep -P "$pid" | tr '\n' ' ')")
    else
        T_PIDS+=("$pid")
    fi
    # The same bytes through every target.
    for path in small large huge; do
        got=$(curl -fsS --max-time 2 -H "$AUTH" "http://127.0.0.1:$port/$path" | wc -c)
        want=$(wc -c <"$RUNDIR/www/$path")
        [ "$got" = "$want" ] || die "$name: /$path gave $got bytes, want $want"
    done
    if [[ $name == gh-full* || $name == nginx-full ]]; then
        check_jwt_auth "$i" "$port"
    elif [ "$name" = gh-key ]; then
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/small")
        [ "$code" = 401 ] || die "$name: a request without a token got $code, want 401 (is auth on?)"
    fi
    log "started $name (pid $pid) on 127.0.0.1:$port"
done

# ---------------------------------------------------------------- measuring
ticks() { # pids... -> utime+stime clock ticks, summed
    local t=0 pid f
    for pid in "$@"; do
        if f=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null); then
            set -- $f
            t=$((t + ${12} + ${13}))
        fi
    done
    echo "$t"
}
cpu_busy() { # cpuN -> "busy total" jiffies
    awk -v c="$1" '$1 == c { b = $2 + $3 + $4 + $7 + $8; print b, b + $5 + $6 }' /proc/stat
}
HZ=$(getconf CLK_TCK)

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.2s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

run_wrk() { # i path seconds out
    local port=${T_PORT[$1]}
    LOADPID=
    taskset -c 1 timeout $(($3 + 15)) wrk -t1 -c50 -d"$3"s --latency -H "$AUTH" \
        "http://127.0.0.1:$port$2" >"$4" 2>&1 &
    LOADPID=$!
    wait "$LOADPID" || die "wrk failed on ${T_NAME[$1]} (see $4)"
    LOADPID=
}

access_log_of() { # i -> the target's access log, if it writes one
    if [[ ${T_NAME[$1]} == gh-full* || ${T_NAME[$1]} == gh-key ]]; then
        echo "$RESULTS/${T_NAME[$1]//[\[\]]/_}.stderr.log" # Gatehouse logs to stderr
    elif [ "${T_NAME[$1]}" = nginx-full ]; then
        echo "$RUNDIR/nginx-full.access.log" # buffered: up to 64 KiB or 1 s behind
    fi
}
access_lines() { # i -> lines in the target's access log (0 without one)
    local f
    f=$(access_log_of "$1")
    if [ -n "$f" ] && [ -f "$f" ]; then wc -l <"$f"; else echo 0; fi
}
truncate_log() {
    local f
    f=$(access_log_of "$1")
    if [ -n "$f" ]; then : >"$f"; fi
    return 0
}

measure_wrk() { # body rep i
    local body=$1 rep=$2 i=$3 name=${T_NAME[$3]} path=/$1
    local slug=${name//[\[\]]/_}
    local out=$RESULTS/wrk-$body-$slug-$rep.log
    run_wrk "$i" "$path" "$WARMUP" "$RESULTS/wrk-warmup.log"
    truncate_log "$i"
    local c0 o0 b0 perfpid=
    if [ -n "$PERF_TARGET" ] && perf_this "$name"; then
        perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "${T_PID[$i]}" \
            -o "$RESULTS/perf-$slug-$body-$rep.data" 2>"$RESULTS/perf-$slug-$body-$rep.log" &
        perfpid=$!
        sleep 0.3
    fi
    c0=$(ticks ${T_PIDS[$i]}) o0=$(ticks $ORIGIN_PIDS) b0=$(cpu_busy cpu1)
    run_wrk "$i" "$path" "$DURATION" "$out"
    local c1 o1 b1
    c1=$(ticks ${T_PIDS[$i]}) o1=$(ticks $ORIGIN_PIDS) b1=$(cpu_busy cpu1)
    if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
    local reqs rps p50 p99 non2xx sock secs
    reqs=$(awk '/requests in/ {print $1}' "$out")
    secs=$(awk '/requests in/ {gsub(/s,/, "", $4); print $4}' "$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' "$out")
    if [ -z "$reqs" ] || [ -z "$rps" ]; then die "could not parse $out"; fi
    local cpu_us cpu_pct gen_busy logged
    cpu_us=$(awk -v d=$((c1 - c0)) -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    cpu_pct=$(awk -v d=$((c1 - c0)) -v s="$secs" -v hz="$HZ" 'BEGIN { printf "%.1f", d * 100 / hz / s }')
    gen_busy=$(awk -v a="$b0" -v b="$b1" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.1f", (y[2] > x[2]) ? (y[1] - x[1]) * 100 / (y[2] - x[2]) : 0 }')
    local origin_pct
    origin_pct=$(awk -v d=$((o1 - o0)) -v s="$secs" -v hz="$HZ" 'BEGIN { printf "%.1f", d * 100 / hz / s }')
    logged=$(access_lines "$i")
    truncate_log "$i"
    printf 'wrk\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$body" "$rep" "$name" \
        "$rps" "$p50" "$p99" "$cpu_us" "$cpu_pct" "$((${non2xx:-0} + ${sock:-0}))" "$reqs" \
        "$gen_busy" "$origin_pct" "$logged" >>"$MEAS"
    log "wrk  $body rep $rep $name: $rps req/s, ${cpu_us} us CPU/req, proxy CPU ${cpu_pct}%, CPU1 ${gen_busy}%, errors $((${non2xx:-0} + ${sock:-0}))"
}

measure_oha() { # body rep i rate
    local body=$1 rep=$2 i=$3 rate=$4 name=${T_NAME[$3]} path=/$1
    local slug=${name//[\[\]]/_}
    local out=$RESULTS/oha-$body-$slug-$rep.log url="http://127.0.0.1:${T_PORT[$3]}$path"
    local warm=$((WARMUP < 2 ? WARMUP : 2))
    for phase in warm measure; do
        local secs=$DURATION file=$out
        [ "$phase" = warm ] && secs=$warm file=$RESULTS/oha-warmup.log
        taskset -c 1 timeout $((secs + 15)) "$OHA" --no-tui --output-format json \
            -z "${secs}s" -w -q "$rate" --latency-correction -c 50 -H "$AUTH" "$url" \
            >"$file" 2>"$file.err" &
        LOADPID=$!
        wait "$LOADPID" || die "oha failed on $name (see $file.err)"
        LOADPID=
    done
    truncate_log "$i"
    python3 - "$out" "$body" "$rep" "$name" "$rate" >>"$MEAS" <<'PY' || die "could not parse $out"
import json, sys
path, body, rep, name, rate = sys.argv[1:]
d = json.load(open(path))
s = d["summary"]
lat = d.get("latencyPercentiles") or d.get("latency_percentiles") or {}
def ms(k):
    v = lat.get(k)
    return "nan" if v is None else "%.3f" % (v * 1000)
codes = d.get("statusCodeDistribution") or {}
ok = sum(n for c, n in codes.items() if 200 <= int(c) < 300)
bad = sum(n for c, n in codes.items() if not 200 <= int(c) < 300)
errs = sum((d.get("errorDistribution") or {}).values())
rps = s.get("requestsPerSec", 0.0)
print("oha\t%s\t%s\t%s\t%.1f\t%s\t%s\tnan\tnan\t%d\t%d\tnan\tnan\t0\t%s\t%s" % (
    body, rep, name, rps, ms("p50"), ms("p99"), bad + errs, ok + bad, rate, ms("p99.9")))
PY
    log "oha  $body rep $rep $name: $(tail -1 "$MEAS" | cut -f5-7 | tr '\t' ' ') (req/s p50 p99 ms)"
}

index_of() { # target name -> index, or nothing
    local i
    for i in $(seq 0 $((NT - 1))); do [ "${T_NAME[$i]}" = "$1" ] && echo "$i"; done
    return 0
}

# A fresh instance of target i (bare Pingora, Gatehouse or nginx) on port, for one
# side-by-side repetition: sets STARTED_PID (the process to stop) and STARTED_PIDS (the
# processes whose CPU counts: nginx's master and worker).
STARTED_PID= STARTED_PIDS=
start_pair_instance() { # i port
    local i=$1 port=$2 slug=${T_NAME[$1]//[\[\]]/_}
    local out=$RESULTS/pair-$slug.stderr.log
    : >"$out"
    # Its own rundir (pid file, upgrade socket, nginx's logs): the long-running instance
    # keeps its own.
    if [ "${T_KIND[$i]}" = nginx ]; then
        launch_nginx "$i" "$port" "$RUNDIR/pair-$slug" "$out"
    else
        launch_rust "$i" "$port" "$RUNDIR/pair-$slug" "$out"
    fi
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_http "$STARTED_PID" "$port" /small "$AUTH" ||
        die "${T_NAME[$i]} (side by side) did not come up on port $port (see $out)"
    STARTED_PIDS=$STARTED_PID
    if [ "${T_KIND[$i]}" = nginx ]; then
        STARTED_PIDS="$STARTED_PID $(pgrep -P "$STARTED_PID" | tr '\n' ' ')"
    fi
}

pair_truncate_logs() { # slug: the access logs of a side-by-side instance
    local f
    : >"$RESULTS/pair-$1.stderr.log"
    for f in "$RUNDIR/pair-$1"/*.access.log; do
        if [ -f "$f" ]; then : >"$f"; fi
    done
}

stop_pair_instance() { # pid: Pingora's fast stop (SIGINT), then SIGKILL after 5 s
    kill -INT "$1" 2>/dev/null || true
    local n
    for n in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Targets i and j loaded at the same time: the CPU per request of each. Both run as fresh
# instances on the two pair ports, which swap every repetition (the one on the first
# port starts first): an A/A test on this machine measured ~1% more CPU per request on
# one of two listening ports, whichever process held it, so a port kept for the whole
# run would tilt every repetition the same way.
measure_pair() { # body rep i j
    local body=$1 rep=$2 i=$3 j=$4 path=/$1 phase secs out_i out_j pid_i pid_j pids_i pids_j
    local port_i=${PAIR_PORTS[$((rep % 2))]} port_j=${PAIR_PORTS[$(((rep + 1) % 2))]}
    if [ "$port_i" = "${PAIR_PORTS[0]}" ]; then
        start_pair_instance "$i" "$port_i"; pid_i=$STARTED_PID pids_i=$STARTED_PIDS
        start_pair_instance "$j" "$port_j"; pid_j=$STARTED_PID pids_j=$STARTED_PIDS
    else
        start_pair_instance "$j" "$port_j"; pid_j=$STARTED_PID pids_j=$STARTED_PIDS
        start_pair_instance "$i" "$port_i"; pid_i=$STARTED_PID pids_i=$STARTED_PIDS
    fi
    local slug_i=${T_NAME[$i]//[\[\]]/_} slug_j=${T_NAME[$j]//[\[\]]/_}
    for phase in warm measure; do
        secs=$DURATION out_i=$RESULTS/pair-$body-$slug_i-$rep.log
        out_j=$RESULTS/pair-$body-$slug_j-$rep.log
        if [ "$phase" = warm ]; then
            secs=$WARMUP out_i=$RESULTS/wrk-warmup.log out_j=$RESULTS/wrk-warmup2.log
        fi
        # The access log of the warm-up is not kept.
        pair_truncate_logs "$slug_i"
        pair_truncate_logs "$slug_j"
        local ci0 cj0
        ci0=$(ticks $pids_i) cj0=$(ticks $pids_j)
        taskset -c 1 timeout $((secs + 15)) wrk -t1 -c25 -d"$secs"s -H "$AUTH" \
            "http://127.0.0.1:$port_j$path" >"$out_j" 2>&1 &
        LOADPID2=$!
        taskset -c 1 timeout $((secs + 15)) wrk -t1 -c25 -d"$secs"s -H "$AUTH" \
            "http://127.0.0.1:$port_i$path" >"$out_i" 2>&1 &
        LOADPID=$!
        wait "$LOADPID" || die "wrk failed on ${T_NAME[$i]} (see $out_i)"
        wait "$LOADPID2" || die "wrk failed on ${T_NAME[$j]} (see $out_j)"
        LOADPID='' LOADPID2=''
    done
    local ci1 cj1 ni nj ei ej ri rj
    ci1=$(ticks $pids_i) cj1=$(ticks $pids_j)
    stop_pair_instance "$pid_i"
    stop_pair_instance "$pid_j"
    rm -f "$RESULTS/pair-$slug_i.stderr.log" "$RESULTS/pair-$slug_j.stderr.log" \
        "$RUNDIR/pair-$slug_i"/*.access.log "$RUNDIR/pair-$slug_j"/*.access.log
    ni=$(awk '/requests in/ {print $1}' "$out_i") nj=$(awk '/requests in/ {print $1}' "$out_j")
    ri=$(awk '/^Requests\/sec:/ {print $2}' "$out_i") rj=$(awk '/^Requests\/sec:/ {print $2}' "$out_j")
    if [ -z "$ni" ] || [ -z "$nj" ] || [ -z "$ri" ] || [ -z "$rj" ]; then die "could not parse $out_i or $out_j"; fi
    ei=$(awk -F'[ ,]+' '/Non-2xx/ {n += $NF} /Socket errors:/ {n += $4 + $6 + $8 + $10} END {print n + 0}' "$out_i")
    ej=$(awk -F'[ ,]+' '/Non-2xx/ {n += $NF} /Socket errors:/ {n += $4 + $6 + $8 + $10} END {print n + 0}' "$out_j")
    local cpu_i cpu_j
    cpu_i=$(awk -v d=$((ci1 - ci0)) -v n="$ni" -v hz="$HZ" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    cpu_j=$(awk -v d=$((cj1 - cj0)) -v n="$nj" -v hz="$HZ" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    printf 'pair\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$body" "$rep" "${T_NAME[$i]}" "${T_NAME[$j]}" \
        "$cpu_i" "$cpu_j" "$((ei + ej))" "$ri" "$rj" >>"$MEAS"
    log "pair $body rep $rep ${T_NAME[$i]} (port $port_i) ${cpu_i} us/req $ri req/s, ${T_NAME[$j]} (port $port_j) ${cpu_j} us/req $rj req/s side by side: $(awk -v a="$cpu_i" -v b="$cpu_j" 'BEGIN { printf "%.3f", a / b }')x, errors $((ei + ej))"
}

# wrk --latency fallback: the latency columns come from the wrk runs.
RATES=()
for body in "${bodies[@]}"; do
    log "== $body body: wrk, $REPS x ${DURATION}s per target (+${WARMUP}s warm-up), interleaved"
    for rep in $(seq 1 "$REPS"); do
        for i in $(seq 0 $((NT - 1))); do measure_wrk "$body" "$rep" "$i"; done
    done
    if [ -n "$OHA" ]; then
        if [ -n "$RATE" ]; then
            rate=$RATE
        else
            rate=$(python3 - "$MEAS" "$body" <<'PY'
import statistics, sys
from collections import defaultdict
by = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "wrk" and f[1] == sys.argv[2]:
        by[f[3]].append(float(f[4]))
print(max(1, int(0.5 * min(statistics.median(v) for v in by.values()))))
PY
)
        fi
        RATES+=("$body=$rate")
        log "== $body body: oha at $rate req/s (--latency-correction), $REPS x ${DURATION}s per target"
        for rep in $(seq 1 "$REPS"); do
            for i in $(seq 0 $((NT - 1))); do measure_oha "$body" "$rep" "$i" "$rate"; done
        done
    fi
done

# Side by side: each pair loaded at once, so the ratio sees one state of the machine.
if [ "$PAIRS" -gt 0 ]; then
    PAIR_LIST=()
    for p in gh-pass:bare-pingora gh-full:gh-pass gh-full:nginx-full gh-tls:gh-pass gh-key:gh-full; do
        a=$(index_of "${p%%:*}") b=$(index_of "${p#*:}")
        [ -n "$a" ] && [ -n "$b" ] && PAIR_LIST+=("$a:$b")
    done
    # Each --variant build beside the current one.
    for v in ${VARIANTS[@]+"${VARIANTS[@]}"}; do
        a=$(index_of "gh-pass[${v%%=*}]") b=$(index_of gh-pass)
        [ -n "$a" ] && [ -n "$b" ] && PAIR_LIST+=("$a:$b")
    done
    if [ ${#PAIR_LIST[@]} -gt 0 ]; then
        for body in "${bodies[@]}"; do
            log "== $body body: side by side, $PAIRS x ${DURATION}s per pair (+${WARMUP}s warm-up)"
            for rep in $(seq 1 "$PAIRS"); do
                for p in "${PAIR_LIST[@]}"; do measure_pair "$body" "$rep" "${p%%:*}" "${p#*:}"; done
            done
        done
    fi
fi

# Peak RSS after the runs.
RSS=$RESULTS/rss.log
: >"$RSS"
for i in $(seq 0 $((NT - 1))); do
    kb=0
    for pid in ${T_PIDS[$i]}; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        kb=$((kb + ${v:-0}))
    done
    printf '%s\t%s\n' "${T_NAME[$i]}" "$kb" >>"$RSS"
done

# ---------------------------------------------------------------- report
{
    echo "host: $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "gatehouse: $GATEHOUSE_BIN_ORIG, tree at start: $GIT_REV"
    echo "versions: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')${OHA:+, $("$OHA" --version)}"
    echo "settings: profile=$PROFILE_DIR pgo=$PGO${GATEHOUSE_BIN_ENV:+ (if cargo built them)} allocator=$ALLOCATOR reps=$REPS pairs=$PAIRS duration=${DURATION}s warmup=${WARMUP}s work_stealing=$WORK_STEALING (bare Pingora and Gatehouse); wrk -t1 -c50; oha -c50 --latency-correction${RATES[*]:+ rate ${RATES[*]}}"
    if [ "$NO_OHA" = 1 ]; then
        echo "latency: --no-oha, p50/p99 are from wrk --latency (closed loop: coordinated omission, not honest tail latency)"
    elif [ -z "$OHA" ]; then
        echo "latency: oha not installed, p50/p99 are from wrk --latency (closed loop: coordinated omission, not honest tail latency)"
    fi
    [ -n "$PERF_TARGET" ] && echo "perf: $PERF_TARGET recorded with perf during the wrk runs (those figures include perf's overhead)"
} >"$RESULTS/meta.log"
python3 "$HERE/report.py" "$MEAS" "$RSS" "$RESULTS/meta.log" "${OHA:+oha}" | tee "$RESULTS/latest.md"
cp "$RESULTS/latest.md" "$RESULTS/$STAMP.md.log"
log "saved $RESULTS/latest.md"
