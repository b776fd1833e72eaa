#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing (when it can:
# cmake, a C toolchain, redis-server, dnsmasq, systemd tools, curl, openssl, python3,
# chromium for the dashboard page, prometheus for promtool),
# builds once in the `ci` profile (the release profile's optimisations without fat LTO,
# which only the production binary needs), checks format and
# lints, validates every shipped config, then runs unit + integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# The discovery tests' DNS server, and the system roots HTTPS clients load.
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# The dashboard page's test (headless), and `promtool check metrics`.
command -v chromium >/dev/null || need+=(chromium)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

echo "== format"
cargo fmt --check
echo "== clippy (every target: lib, bin, tests, benches, examples)"
cargo clippy --profile ci --all-targets --locked -- -D warnings
# The build without the default mimalloc allocator (checked, not linked: a few seconds).
cargo clippy --profile ci --locked --no-default-features --bin gatehouse -- -D warnings
echo "== import cycles (files, then top-level modules)"
python3 scripts/import-cycles.py
python3 scripts/import-cycles.py --modules
echo "== build"
# Only the binary here: the test run below builds the test targets, and clippy has
# already type-checked the benches and examples (linking them would cost minutes).
cargo build --profile ci --locked --bin gatehouse
echo "== shipped configs"
for f in conf/*.yaml; do
  GATEHOUSE_JWT_SECRET=ci-secret ./target/ci/gatehouse -c "$f" -t
done
if [ -f systemd/gatehouse.service ]; then
  echo "== systemd-analyze verify"
  GATEHOUSE_BIN=target/ci/gatehouse scripts/verify-systemd.sh
fi
echo "== tests"
cargo nextest run --cargo-profile ci --locked --no-fail-fast "$@"
