#!/usr/bin/env bash
# Memory of idle keep-alive connections (run by hand; not a test).
#
#   benches/load/idle.sh [--no-build] [--conns N] [--rounds R] [--nginx] [--bin PATH]
#
# Starts Gatehouse (one thread, passthrough route) in front of an nginx origin, then per
# round: opens N connections (default 10,000) that each make one keep-alive request and
# then stay open and idle, reads the gateway's RSS, closes them all, waits 3 s and reads
# RSS again. Prints RSS per idle connection and RSS after close against the start.
# --nginx also measures nginx as the proxy (1 worker) the same way.
# Needs nginx, python3, curl. Ports: BENCH_PORT_BASE (default 18600) and up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
BASE=${BENCH_PORT_BASE:-18600}
BUILD=1 CONNS=10000 ROUNDS=2 NGINX=0

die() { echo "idle.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --conns) CONNS=${2:?}; shift ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --nginx) NGINX=1 ;;
        --bin) BIN=${2:?}; BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
for t in nginx python3 curl; do command -v "$t" >/dev/null || die "$t not found"; done
if [ "$BUILD" = 1 ]; then (cd "$ROOT" && cargo build --release --bin gatehouse) >&2; fi
# Each process (the client, the proxy) holds one descriptor per connection.
ulimit -n $((CONNS + 1024)) || die "cannot raise the open-file limit to $((CONNS + 1024))"

# shellcheck source=benches/load/common.sh
. "$(dirname "$0")/common.sh"
scratch gatehouse-idle

ORIGIN=$BASE GW=$((BASE + 1)) NGX=$((BASE + 2))
mkdir -p "$RUN/www" "$RUN/nginx-origin-tmp"
printf ok >"$RUN/www/x"
sed -e "s|@RUNDIR@|$RUN|g" -e "s|@ORIGIN_PORT@|$ORIGIN|g" "$HERE/nginx-origin.conf.in" |
    sed -e 's|location = /small { }|location / { try_files /x =404; }|' >"$RUN/nginx.conf"
nginx -p "$RUN" -e "$RUN/nginx.error.log" -c "$RUN/nginx.conf" 2>/dev/null & PIDS+=($!)

cat >"$RUN/gh.yaml" <<EOF
listen: [{ address: "127.0.0.1:$GW" }]
admin: { address: "127.0.0.1:$((GW + 50))" }
server:
  threads: 1
  pid_file: "$RUN/gh.pid"
  upgrade_sock: "$RUN/gh.sock"
  max_connections: $((CONNS * 2))
  timeouts: { keepalive: 10m }
  access_log: { format: off }
services:
  origin: { upstreams: [{ address: "127.0.0.1:$ORIGIN" }] }
routes:
  - { name: all, match: { path_prefix: / }, service: origin }
EOF
RUST_LOG=warn "$BIN" -c "$RUN/gh.yaml" 2>"$RUN/gh.log" & GHPID=$!
PIDS+=("$GHPID")

# nginx as the proxy (for comparison): one worker, keep-alive connections kept 10 min.
cat >"$RUN/nginx-proxy.conf" <<EOF
worker_processes 1;
pid $RUN/nginx-proxy.pid;
error_log $RUN/nginx-proxy.error.log;
daemon off;
events { worker_connections $((CONNS * 2 + 100)); }
http {
    access_log off;
    keepalive_timeout 600s;
    keepalive_requests 100000;
    client_body_temp_path $RUN/nginx-origin-tmp;
    proxy_temp_path $RUN/nginx-origin-tmp;
    fastcgi_temp_path $RUN/nginx-origin-tmp;
    uwsgi_temp_path $RUN/nginx-origin-tmp;
    scgi_temp_path $RUN/nginx-origin-tmp;
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 16; }
    server {
        listen 127.0.0.1:$NGX;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
if [ "$NGINX" = 1 ]; then
    nginx -p "$RUN" -c "$RUN/nginx-proxy.conf" 2>/dev/null & PIDS+=($!)
fi

for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$GW/x" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$GW/x" || die "gateway did not start (see $RUN/gh.log)"

# rss PID: resident set in KiB (the nginx proxy: its worker, the child of the master).
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
nginx_worker() { pgrep -P "$(cat "$RUN/nginx-proxy.pid")" | head -1; }

measure() { # label port pid-command
    local label=$1 port=$2 pidcmd=$3
    local pid
    pid=$($pidcmd)
    python3 - "$port" "$CONNS" "$ROUNDS" "$pid" "$label" <<'PY'
import socket, sys, time
port, n, rounds, pid, label = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
req = b"GET /x HTTP/1.1\r\nHost: bench\r\n\r\n"
start = rss()
for r in range(1, rounds + 1):
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"ok"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit(f"connection {i} closed early: {got[:80]!r}")
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"connection {i}: {got[:80]!r}")
        socks.append(s)
    time.sleep(2)
    held = rss()
    for s in socks:
        s.close()
    time.sleep(3)
    after = rss()
    print(f"| {label} | {r} | {n:,} | {start / 1024:.1f} | {held / 1024:.1f} | "
          f"{(held - start) * 1024 / n / 1000:.1f} | {after / 1024:.1f} | {after / start:.2f}× |")
PY
}

log "opening $CONNS idle keep-alive connections, $ROUNDS rounds"
echo "| proxy | round | idle connections | RSS at start MiB | RSS while held MiB | KB per idle connection | RSS 3 s after close MiB | after close ÷ start |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
measure gatehouse "$GW" "echo $GHPID"
if [ "$NGINX" = 1 ]; then measure nginx "$NGX" nginx_worker; fi
echo
echo "Each connection made one request (GET, 2-byte body, keep-alive) before idling; KB = 1000 bytes; the gateway with one thread. $(date -u +%Y-%m-%dT%H:%M:%SZ), $(cd "$ROOT" && git rev-parse --short HEAD)."
