#!/usr/bin/env bash
# Regenerate vendor/pingora-core.patch: the diff of vendor/pingora-core (Gatehouse's copy of
# pingora-core, used through [patch.crates-io]) against the published crate in cargo's
# registry. `--check` fails when the committed patch is out of date.
# To move to a new Pingora release: copy the new crate's source to vendor/pingora-core,
# `patch -p0 -d vendor/pingora-core < vendor/pingora-core.patch`, fix what no longer
# applies, bump the version in Cargo.toml, and run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' vendor/pingora-core/Cargo.toml | head -1)
cargo fetch --quiet >/dev/null 2>&1 || true
orig=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/pingora-core-"$version" 2>/dev/null | head -1 || true)
if [ -z "$orig" ]; then
  # The [patch] hides the published crate from `cargo fetch`: download it directly.
  tmp=$(mktemp -d)
  curl -sSfL "https://static.crates.io/crates/pingora-core/pingora-core-$version.crate" | tar -xz -C "$tmp"
  orig="$tmp/pingora-core-$version"
fi
out=$(mktemp)
# -N: files Gatehouse added (connectors/idle.rs) appear whole.
diff -ruN "$orig/src" vendor/pingora-core/src \
  | sed -E "s#^(---|\+\+\+) [^ \t]*/(src/[^\t]*)\t.*#\1 \2#; s#^diff -ruN .*/src/#diff -ruN src/#" >"$out" || true
if [ "${1:-}" = "--check" ]; then
  if ! cmp -s "$out" vendor/pingora-core.patch; then
    echo "vendor/pingora-core.patch is out of date: run scripts/pingora-patch.sh" >&2
    diff "$out" vendor/pingora-core.patch | head -20 >&2
    exit 1
  fi
  echo "pingora-core patch up to date ($(grep -c '^@@' "$out") hunks)"
else
  mv "$out" vendor/pingora-core.patch
  echo "wrote vendor/pingora-core.patch ($(grep -c '^@@' vendor/pingora-core.patch) hunks)"
fi
