#!/usr/bin/env python3
"""Roll `perf script -F ip,sym` call stacks up by component (stdlib only).

A sample counts for a component when any frame of its stack matches one of the
component's patterns (inclusive time); the self-time rows (allocator, kernel) look only at
the leaf frame. Percentages are of all samples.

usage: perf script -F ip,sym ... | perf_rollup.py [REQUESTS SAMPLE_HZ]
With the requests served while recording and perf's -F, each row also shows µs/request.
"""

import re
import sys

INCLUSIVE = [
    ("gatehouse request_filter (all of it)", r"Gateway as [^>]*ProxyHttp>::request_filter"),
    ("  JWT verify (gatehouse::auth)", r"gatehouse::auth::"),
    ("  rate limiter (gatehouse::ratelimit)", r"gatehouse::ratelimit::"),
    ("  route lookup (gatehouse::routing)", r"gatehouse::routing::"),
    ("  request id / client ip (gatehouse::headers)", r"gatehouse::headers::"),
    ("gatehouse upstream_peer", r"Gateway as [^>]*ProxyHttp>::upstream_peer"),
    ("gatehouse upstream_request_filter", r"Gateway as [^>]*ProxyHttp>::upstream_request_filter"),
    ("gatehouse response_filter", r"Gateway as [^>]*ProxyHttp>::response_filter"),
    ("gatehouse logging phase (all of it)", r"Gateway as [^>]*ProxyHttp>::logging"),
    ("  metrics (prometheus)", r"prometheus::"),
    ("  access log (gatehouse::access_log + log/env_logger)", r"gatehouse::access_log::|env_logger::|\blog::__private_api"),
    ("  rfc3339 timestamp formatting", r"gatehouse::access_log::rfc3339"),
    ("ArcSwap snapshot load", r"arc_swap::"),
    ("pingora: read downstream request", r"pingora_core::protocols::http::v1::server::HttpSession::read_request"),
    ("pingora: write response to client", r"pingora_core::protocols::http::v1::server::HttpSession::write_"),
    ("pingora: upstream connection pool", r"pingora_core::connectors::|pingora_pool::"),
    ("pingora: upstream write/read", r"pingora_core::protocols::http::v1::client::"),
    ("tokio scheduler / io driver", r"tokio::runtime::"),
    ("pingora timer registration (TimerManager)", r"pingora_timeout::timer::TimerManager"),
    ("kernel: waking the peer of a send (sock_def_readable)", r"KERNEL sock_def_readable"),
    ("stderr write(2) (access log)", r"StderrRaw as std::io::Write"),
]
SELF = [
    ("self: allocator (malloc/free/realloc)", r"^(__libc_|_int_|malloc|free|cfree|realloc|calloc|tcache|unlink_chunk|mi_|_mi_|__rdl_|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc::)"),
    ("self: memcpy/memmove/memset", r"^(__memmove|__memcpy|__memset|memcpy|memmove|memset)"),
    ("self: kernel", r"KERNEL"),
]


# The first segment of each path in the symbol (after start, `<`, space, `&`, `(`).
CRATE = re.compile(r"(?:^|[<\s&(,])([A-Za-z_][A-Za-z0-9_]*)::")
GENERIC = {"core", "alloc", "std", "T", "F", "S", "SV", "C"}


def crate_of(sym):
    if sym.startswith("KERNEL"):
        return "kernel"
    if re.match(SELF[0][1], sym):
        return "libc malloc/free"
    if re.match(SELF[1][1], sym):
        return "libc memcpy/memset"
    names = CRATE.findall(sym)
    for n in names:
        if n not in GENERIC:
            return n
    return names[0] if names else sym.split("@")[0][:40]


def main():
    # Optional: requests served during the recording and the sampling rate, to print
    # µs of CPU per request next to each share.
    args = sys.argv[1:]
    per_req = None
    if len(args) == 2:
        requests, hz = float(args[0]), float(args[1])
        per_req = 1e6 / hz / requests if requests > 0 else None
    inc = [(n, re.compile(p)) for n, p in INCLUSIVE]
    slf = [(n, re.compile(p)) for n, p in SELF]
    counts_inc = [0] * len(inc)
    counts_self = [0] * len(slf)
    by_crate = {}
    total = 0
    stack = []

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        for i, (_, rx) in enumerate(inc):
            if any(rx.search(f) for f in stack):
                counts_inc[i] += 1
        leaf = stack[0]
        for i, (_, rx) in enumerate(slf):
            if rx.search(leaf):
                counts_self[i] += 1
        c = crate_of(leaf)
        by_crate[c] = by_crate.get(c, 0) + 1
        stack.clear()

    for line in sys.stdin:
        s = line.strip()
        if not s:
            flush()
            continue
        parts = s.split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]+", parts[0]):
            sym = parts[1]
            # Kernel addresses are in the upper half.
            if parts[0].startswith("ffff"):
                sym = "KERNEL " + sym
            stack.append(sym)
    flush()
    if total == 0:
        print("no samples")
        return
    w = max(len(n) for n, _ in INCLUSIVE + SELF)

    def row(name, c):
        us = f"  {c * per_req:6.2f} µs/req" if per_req else ""
        print(f"{name:<{w}}  {100.0 * c / total:5.1f}%{us}")

    for (n, _), c in zip(inc, counts_inc):
        row(n, c)
    for (n, _), c in zip(slf, counts_self):
        row(n, c)
    row("all samples", total)
    print()
    print("Self time by crate (leaf frame):")
    for c, n in sorted(by_crate.items(), key=lambda kv: -kv[1])[:14]:
        row("  " + c, n)


if __name__ == "__main__":
    main()
