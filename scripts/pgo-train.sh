#!/usr/bin/env bash
# Regenerates pgo/gatehouse.profdata, the profile `cargo build --release` optimises with
# (scripts/rustc-pgo; README "Build"): an instrumented release build of gatehouse and bare
# Pingora (target/pgo-gen), the load benchmark's targets driven through it for a short
# while (bare Pingora, the passthrough, the full pipeline, the HTTPS upstream and the API
# key pipeline at 2 B, 16 KiB and 64 KiB), and the counts merged. Run it after changing the
# request path: code the profile does not know is optimised as without PGO (no error),
# so a stale profile costs speed, never correctness.
#
#   scripts/pgo-train.sh        (~20 minutes on 2 cores: the instrumented build is a
#                               clean build of its own)
#
# Needs llvm-profdata of rustc's LLVM major version (Debian: apt install llvm-22), the
# load benchmark's tools (nginx, wrk, openssl) and a free CPU 0 and 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
PROFDATA=${LLVM_PROFDATA:-$(command -v "llvm-profdata-$llvm" || command -v llvm-profdata || true)}
[ -n "$PROFDATA" ] || { echo "pgo-train: no llvm-profdata (apt install llvm-$llvm)" >&2; exit 1; }
"$PROFDATA" --version | grep -q "LLVM version $llvm\." ||
    { echo "pgo-train: $PROFDATA is not LLVM $llvm (rustc's)" >&2; exit 1; }

# The counts go to target/pgo-gen/profraw: a fixed path, so the instrumented build's
# flags stay the same from one run to the next and only changed crates rebuild.
GEN=$ROOT/target/pgo-gen
RAW=$(mktemp -d /tmp/gatehouse-pgo.XXXXXX)
trap 'rm -rf "$RAW"' EXIT
mkdir -p "$RAW/results" "$GEN/profraw"

echo "pgo-train: instrumented build (target/pgo-gen)" >&2
GATEHOUSE_PGO=off CARGO_TARGET_DIR="$GEN" RUSTFLAGS="-Cprofile-generate=$GEN/profraw" \
    cargo build --release --locked --bin gatehouse --example bare_proxy

# Build scripts and proc macros are instrumented too and wrote their counts while the
# build ran: only the load's belong in the profile.
rm -f "$GEN"/profraw/*.profraw
echo "pgo-train: load (benches/load/run.sh, short runs)" >&2
LLVM_PROFILE_FILE="$GEN/profraw/%m_%p.profraw" BENCH_RESULTS="$RAW/results" \
    GATEHOUSE_BIN="$ROOT/target/pgo-gen/release/gatehouse" \
    BARE_BIN="$ROOT/target/pgo-gen/release/examples/bare_proxy" \
    benches/load/run.sh --no-build --quick --no-oha --pairs 0 --duration 4 \
    --targets bare,gh-pass,gh-full,gh-tls,gh-key --bodies small,large,huge >/dev/null

ls "$GEN"/profraw/*.profraw >/dev/null 2>&1 || { echo "pgo-train: no profiles were written" >&2; exit 1; }
mkdir -p pgo
# --sparse leaves out what never ran: code the training does not reach (h2, downstream
# TLS, the cache...) keeps its ordinary optimisation instead of being treated as cold.
"$PROFDATA" merge --sparse -o pgo/gatehouse.profdata "$GEN"/profraw/*.profraw
# The wrapper's version floor and pgo/README.md's record follow the profile.
sed -i "s/^llvm_needed=[0-9]*/llvm_needed=$llvm/" scripts/rustc-pgo
rev=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src vendor examples Cargo.toml Cargo.lock || echo " + uncommitted changes")
sed -i -e "s/^- Written with LLVM [0-9]* (rustc [0-9.]*)/- Written with LLVM $llvm (rustc $(rustc -V | awk '{print $2}'))/" \
    -e "s/^- Trained at commit [^.]*\./- Trained at commit $rev./" pgo/README.md
echo "pgo-train: wrote pgo/gatehouse.profdata ($(wc -c <pgo/gatehouse.profdata) bytes," \
    "LLVM $llvm); rebuild with cargo build --release" >&2
