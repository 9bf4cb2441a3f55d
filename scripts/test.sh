#!/usr/bin/env bash
# The whole test suite, in one command: README's test command, and what .ci/run runs.
# Formatting and lints, Rust unit + integration tests, then the real
# socket.io-client (client-compat/) against the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "checking for tools"
for tool in cargo node npm; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (see README, 'Requirements')" >&2; exit 1; }
done

step "checking for PostgreSQL (the store tests need it)"
pg_url="${SWITCHBOARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if command -v psql >/dev/null && ! psql "$pg_url" -qtAc 'select 1' >/dev/null 2>&1; then
  echo "PostgreSQL is not reachable at $pg_url (set SWITCHBOARD_TEST_POSTGRES_URL, or see README)" >&2
  exit 1
fi

step "checking for Redis (the cluster tests need it)"
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis is not reachable on 127.0.0.1:6379 (see README)" >&2
  exit 1
fi

if [ ! -x "${NGINX_BIN:-/usr/sbin/nginx}" ]; then
  echo "nginx is needed by the deploy test (Debian: apt-get install nginx-light)" >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test (unit, integration, and examples built)"
FUZZ_SECS="${FUZZ_SECS:-10}" cargo test

step "client-compat: socket.io-client 4.8 against the binary"
cargo build --quiet --bin switchboard --example echo --example embed
(
  cd client-compat
  if [ ! -d node_modules/socket.io-client ] || [ "${CI:-}" = "true" ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  SWITCHBOARD_BIN="$PWD/../target/debug/switchboard" npm test --silent
)
step "all tests passed"
