#!/usr/bin/env bash
# Where does Gatehouse's time go? Runs run.sh on bare Pingora, Gatehouse passthrough and
# Gatehouse full pipeline with `perf record -e cpu-clock --call-graph dwarf` on each proxy
# during its measured wrk run, then prints for each:
#   - the top symbols by self time (perf report --no-children),
#   - an inclusive roll-up by component (a sample counts for a component when any frame
#     of its stack belongs to it: access log, metrics, rate limiter, JWT, routing, ...),
#     as a share of samples and as µs of CPU per request.
#
#   benches/load/profile.sh [--duration S] [--large] [other run.sh options]
#
# Results go to benches/load/results/profile/ (git-ignored), the summary also to stdout.
# The throughput figures of this run include perf's overhead: use run.sh for numbers.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v perf >/dev/null 2>&1 || { echo "profile.sh: perf not found (apt-get install -y linux-perf)" >&2; exit 1; }
OUT=$HERE/results/profile
mkdir -p "$OUT"
rm -f "$OUT"/perf-*.data "$OUT"/perf-*.data.old

TARGETS=${PROFILE_TARGETS:-bare-pingora,gh-pass,gh-full}
BENCH_RESULTS=$OUT "$HERE/run.sh" --reps 1 --targets bare,gh-pass,gh-full \
    --perf "$TARGETS" "$@" >"$OUT/run.md.log"

HZ=999 # run.sh's perf record -F
requests_of() { # perf-NAME-BODY-REP -> requests of that wrk run
    local base=${1#perf-} rep body target
    rep=${base##*-}; base=${base%-*}; body=${base##*-}; target=${base%-*}
    awk -F'\t' -v t="$target" -v b="$body" -v r="$rep" \
        '$1 == "wrk" && $2 == b && $3 == r && $4 == t {print $11}' "$OUT/measurements.log"
}
summary=$OUT/summary.md
: >"$summary"
for data in "$OUT"/perf-*.data; do
    name=$(basename "$data" .data)
    {
        echo "### $name"
        echo
        echo "Top symbols, self time (% of the proxy's samples):"
        echo
        echo '```'
        perf report -i "$data" --no-children --sort symbol --stdio --percent-limit 0.8 \
            --no-inline -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
        echo '```'
        echo
        echo "Inclusive, by component (share of samples whose stack includes it):"
        echo
        echo '```'
        perf script -i "$data" --no-inline -F ip,sym 2>/dev/null |
            python3 "$HERE/perf_rollup.py" "$(requests_of "$name")" "$HZ"
        echo '```'
        echo
    } >>"$summary"
done
cat "$summary"
