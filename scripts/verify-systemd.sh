#!/usr/bin/env bash
# `systemd-analyze verify` on the shipped unit, against this checkout's binary and
# helper (verify checks that the executables exist).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$(realpath "${GATEHOUSE_BIN:-target/release/gatehouse}")
ctl=$(pwd)/systemd/gatehouse-ctl
sed -e "s#/usr/local/bin/gatehouse-ctl#$ctl#g" -e "s#/usr/local/bin/gatehouse #$bin #g" \
  systemd/gatehouse.service > "$tmp/gatehouse.service"
# verify reports unknown users only as warnings; a syntax or directive error fails it.
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp/gatehouse.service" 2>&1) || {
  echo "$out"
  exit 1
}
if echo "$out" | grep -Ei "unknown|invalid|failed|error" | grep -v "Failed to resolve user\|group\|/usr/share/doc"; then
  echo "systemd-analyze verify reported problems:"; echo "$out"; exit 1
fi
echo "systemd unit OK"
