#!/usr/bin/env python3
"""Turn run.sh's raw measurements into the Markdown report (stdlib only).

usage: report.py MEASUREMENTS RSS META [oha]

MEASUREMENTS: tab-separated lines written by run.sh
  wrk  body rep target rps p50 p99 cpu_us_per_req proxy_cpu_pct errors requests cpu1_busy origin_cpu_pct access_lines
  oha  body rep target rps p50 p99 nan nan errors requests nan nan 0 rate p99.9
  pair body rep target_a target_b cpu_us_per_req_a cpu_us_per_req_b errors [rps_a rps_b]
RSS: target <tab> VmHWM kB (summed over the target's processes)
"""

import math
import statistics
import sys
from collections import OrderedDict, defaultdict


def median(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def fmt(x, digits=1):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def ratio(x):
    return "–" if x is None or math.isnan(x) else f"{x:.2f}×"


SIZES = {"small": "2 B", "large": "16 KiB", "huge": "64 KiB"}


def main():
    meas_path, rss_path, meta_path = sys.argv[1:4]
    have_oha = len(sys.argv) > 4 and sys.argv[4] == "oha"

    wrk = defaultdict(lambda: defaultdict(dict))  # body -> target -> rep -> fields
    oha = defaultdict(lambda: defaultdict(dict))
    order = OrderedDict()
    # body -> (a, b) -> [(cpu_a, cpu_b, errors, rps_a, rps_b)]
    pairs = defaultdict(lambda: defaultdict(list))
    for line in open(meas_path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "pair" and len(f) >= 8:
            rps_a, rps_b = (float(f[8]), float(f[9])) if len(f) >= 10 else (math.nan, math.nan)
            pairs[f[1]][(f[3], f[4])].append(
                (float(f[5]), float(f[6]), int(f[7]), rps_a, rps_b))
            continue
        if len(f) < 14:
            continue
        kind, body, rep, target = f[0], f[1], int(f[2]), f[3]
        order[target] = None
        nums = [float(x) for x in f[4:14]]
        rec = dict(
            rps=nums[0], p50=nums[1], p99=nums[2], cpu=nums[3], cpu_pct=nums[4],
            errors=nums[5], reqs=nums[6], cpu1=nums[7], origin_pct=nums[8], logged=nums[9],
            p999=float(f[15]) if len(f) > 15 else math.nan,
        )
        (wrk if kind == "wrk" else oha)[body][target][rep] = rec
    rss = {}
    for line in open(rss_path):
        name, kb = line.rstrip("\n").split("\t")
        rss[name] = int(kb) / 1024.0

    out = []
    for line in open(meta_path):
        out.append(f"> {line.strip()}  ")
    out.append("")

    checks = []
    for body in wrk:
        targets = [t for t in order if t in wrk[body]]
        W, O = wrk[body], oha.get(body, {})

        def med(src, t, k):
            return median([r[k] for r in src.get(t, {}).values()])

        def rep_ratios(t, base, k):
            """t/base per repetition (interleaved runs pair up in time)."""
            if base not in W or t not in W:
                return []
            return [W[t][r][k] / W[base][r][k] for r in W[t] if r in W[base] and W[base][r][k] > 0]

        def rep_ratio(t, base, k):
            """Median over repetitions of t/base."""
            return median(rep_ratios(t, base, k))

        def spread(t, base, k):
            rs = rep_ratios(t, base, k)
            return f"{min(rs):.2f}–{max(rs):.2f}" if len(rs) > 1 else "–"

        lat_src = O if (have_oha and O) else W
        lat_name = "oha, fixed rate, latency-corrected" if lat_src is O else "wrk --latency, closed loop"
        size = SIZES.get(body, body)
        out.append(f"### /{body} ({size} body)")
        out.append("")
        out.append(
            "| target | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | proxy CPU | peak RSS MiB | errors "
            "| req/s vs nginx | req/s vs bare | CPU/req vs nginx | CPU/req vs bare |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            errors = sum(r["errors"] for r in W[t].values()) + sum(
                r["errors"] for r in O.get(t, {}).values()
            )
            out.append(
                "| {} | {} | {} | {} | {} | {} | {}% | {} | {} | {} | {} | {} | {} |".format(
                    t,
                    fmt(med(W, t, "rps"), 0),
                    fmt(med(lat_src, t, "p50"), 3),
                    fmt(med(lat_src, t, "p99"), 3),
                    fmt(med(lat_src, t, "p999"), 3) if lat_src is O else "–",
                    fmt(med(W, t, "cpu"), 1),
                    fmt(med(W, t, "cpu_pct"), 0),
                    fmt(rss.get(t, math.nan), 1),
                    int(errors),
                    ratio(rep_ratio(t, "nginx", "rps")),
                    ratio(rep_ratio(t, "bare-pingora", "rps")),
                    ratio(rep_ratio(t, "nginx", "cpu")),
                    ratio(rep_ratio(t, "bare-pingora", "cpu")),
                )
            )
        out.append("")
        reps = max(len(v) for v in W.values())
        cpu1 = median([r["cpu1"] for t in targets for r in W[t].values()])
        out.append(
            f"req/s and CPU from wrk (-t1 -c50, closed loop); p50/p99 from {lat_name}; "
            f"medians of {reps} interleaved repetition(s); ratios are medians of per-repetition "
            f"ratios. CPU µs/req = proxy utime+stime over the wrk run ÷ requests (nginx: "
            f"master+worker); proxy CPU = share of one core. Load-generator core (CPU 1) "
            f"busy: {fmt(cpu1, 0)}% median — near 100% means the generator side, not the "
            f"proxy, limits req/s."
        )
        for t in targets:
            if t.startswith("gh-full") or t == "nginx-full":
                per = [r["logged"] / r["reqs"] for r in W[t].values() if r["reqs"] > 0]
                note = " (buffered: up to 64 KiB or 1 s of lines written late)" if t == "nginx-full" else ""
                out.append(
                    f"{t}: access-log lines per request during the wrk runs: {fmt(median(per), 3)}{note}."
                )
        if "gh-full" in W and "nginx-full" in W:
            out.append(
                f"gh-full ÷ nginx-full (the JWT + rate-limit gateway on nginx, njs), interleaved: "
                f"CPU/req {ratio(rep_ratio('gh-full', 'nginx-full', 'cpu'))} "
                f"(per repetition {spread('gh-full', 'nginx-full', 'cpu')}), "
                f"req/s {ratio(rep_ratio('gh-full', 'nginx-full', 'rps'))} "
                f"(per repetition {spread('gh-full', 'nginx-full', 'rps')})."
            )
        out.append("")

        # The targets (small body only; the 16 KiB table is informational).
        if body == "small":
            def check(label, value, limit, ok, per_rep="–"):
                checks.append(
                    f"| {label} | {ratio(value) if isinstance(value, float) else value} | "
                    f"{per_rep} | {limit} | {'✅' if ok else '❌'} |"
                )

            def ratio_check(label, t, base, k, limit, ok):
                v = rep_ratio(t, base, k)
                check(label, v, limit, ok(v), spread(t, base, k))

            def pair_check(label, a, b, limit, ok):
                rs = [x / y for x, y, *_ in pairs.get("small", {}).get((a, b), []) if y > 0]
                if rs:
                    v = median(rs)
                    check(label + ", side by side", v, limit, ok(v),
                          f"{min(rs):.2f}–{max(rs):.2f}" if len(rs) > 1 else "–")

            if "gh-pass" in W and "bare-pingora" in W:
                ratio_check("gh-pass CPU/req ÷ bare Pingora", "gh-pass", "bare-pingora", "cpu",
                            "≤ 1.10×", lambda v: v <= 1.10)
                pair_check("gh-pass CPU/req ÷ bare Pingora", "gh-pass", "bare-pingora",
                           "≤ 1.10×", lambda v: v <= 1.10)
            if "gh-full" in W and "gh-pass" in W:
                ratio_check("gh-full CPU/req ÷ gh-pass", "gh-full", "gh-pass", "cpu",
                            "≤ 1.25×", lambda v: v <= 1.25)
                pair_check("gh-full CPU/req ÷ gh-pass", "gh-full", "gh-pass",
                           "≤ 1.25×", lambda v: v <= 1.25)
                ratio_check("gh-full req/s ÷ gh-pass", "gh-full", "gh-pass", "rps",
                            "≥ 0.80×", lambda v: v >= 0.8)
            if "gh-full" in W and "nginx" in W:
                ratio_check("gh-full req/s ÷ nginx", "gh-full", "nginx", "rps",
                            "≥ 0.60×", lambda v: v >= 0.6)
            for t in targets:
                if t.startswith("gh-") and t in rss:
                    check(f"{t} peak RSS", f"{rss[t]:.1f} MiB", "≤ 32 MiB", rss[t] <= 32)

            variants = [t for t in targets if "[" in t]
            if variants:
                out.append("#### Gatehouse build variants vs the current profile (same run)")
                out.append("")
                out.append("| variant | req/s | CPU µs/req | req/s vs current | CPU/req vs current |")
                out.append("|---|---:|---:|---:|---:|")
                for t in variants:
                    base = t.split("[")[0]
                    out.append(
                        f"| {t} | {fmt(med(W, t, 'rps'), 0)} | {fmt(med(W, t, 'cpu'), 1)} | "
                        f"{ratio(rep_ratio(t, base, 'rps'))} | {ratio(rep_ratio(t, base, 'cpu'))} |"
                    )
                out.append("")

    for body, by_pair in pairs.items():  # in run order: small, large, huge
        out.append(f"### Side by side (/{body}, {SIZES.get(body, body)} body)")
        out.append("")
        out.append("| pair | CPU µs/req | CPU/req ratio | per repetition | req/s | repetitions |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for (a, b), runs in by_pair.items():
            rs = [r[0] / r[1] for r in runs if r[1] > 0]
            out.append(
                f"| {a} beside {b} | {fmt(median([r[0] for r in runs]))} vs "
                f"{fmt(median([r[1] for r in runs]))} | {ratio(median(rs))} | "
                f"{min(rs):.2f}–{max(rs):.2f} | {fmt(median([r[3] for r in runs]), 0)} vs "
                f"{fmt(median([r[4] for r in runs]), 0)} | {len(rs)} |"
            )
        out.append("")
    if pairs:
        out.append(
            "Both targets of a pair loaded at the same time (wrk -t1 -c25 each, on CPU 1), "
            "both pinned to CPU 0: each one's CPU per request over the same seconds, so a "
            "slower or faster moment of the shared machine counts for both. They share the "
            "core's caches, which costs the larger program more: expect a somewhat higher "
            "ratio than from the interleaved runs, with far less spread. Each repetition "
            "starts both anew on two ports that swap from one repetition to the next (a "
            "listening port alone can cost ~1% CPU per request). req/s: each side's wrk "
            "(-c25) while both run, so the two share CPU 0 and CPU 1: a pair's req/s show "
            "how the core divides between them, not either one's capacity."
        )
        out.append("")

    all_errors = sum(r[2] for by_pair in pairs.values() for runs in by_pair.values() for r in runs)
    for src in (wrk, oha):
        for body in src.values():
            for t in body.values():
                all_errors += sum(r["errors"] for r in t.values())
    checks.append(
        f"| errors (all targets, all runs) | {int(all_errors)} | – | 0 | "
        f"{'✅' if all_errors == 0 else '❌'} |"
    )
    out.append("### Issue targets (small body)")
    out.append("")
    out.append("Measured: the median of the per-repetition ratios; per repetition: their range.")
    out.append("")
    out.append("| check | measured | per repetition | target | |")
    out.append("|---|---:|---:|---:|---|")
    out.extend(checks)
    print("\n".join(out))


if __name__ == "__main__":
    main()
