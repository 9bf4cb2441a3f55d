#!/usr/bin/env bash
# The whole test suite, in one command: README's test command, and all that
# .ci/run runs. It sets itself up (scripts/services.sh: installs what is
# missing when run as root on Debian, else says what to install; starts its
# own PostgreSQL and Redis on free ports), then: formatting and lints, Rust
# unit + integration tests, then the real socket.io-client (client-compat/)
# against the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setting up: tools, and throwaway PostgreSQL and Redis"
# shellcheck source=scripts/services.sh
. scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test (unit, integration, and examples built)"
FUZZ_SECS="${FUZZ_SECS:-10}" cargo test

step "client-compat: socket.io-client 4.8 against the binary"
cargo build --quiet --bin switchboard --example echo --example embed
# Where cargo built it (CARGO_TARGET_DIR moves it), as an absolute path.
target_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)"
(
  cd client-compat
  if [ ! -d node_modules/socket.io-client ] || [ "${CI:-}" = "true" ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  SWITCHBOARD_BIN="$target_dir/debug/switchboard" npm test --silent
)
step "schemathesis: the HTTP API against its OpenAPI description"
SWITCHBOARD_BIN="$target_dir/debug/switchboard" scripts/schemathesis.sh

step "the demo page in Chromium (examples/web)"
(
  cd examples/web
  if [ ! -d node_modules/playwright-core ] || [ "${CI:-}" = "true" ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
  SWITCHBOARD_BIN="$target_dir/debug/switchboard" npm test --silent
)
step "all tests passed"
