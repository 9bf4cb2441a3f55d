#!/usr/bin/env bash
# Try switchboard in a browser, in one command: builds the demo page
# (examples/web) and starts a dev-mode server that serves it at /.
# Extra arguments go to the server, e.g. scripts/demo.sh --database-url memory
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo npm; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (see README.md#demo: it needs Rust and Node.js with npm)" >&2; exit 1; }
done

echo "==> building the demo page (examples/web)"
(
  cd examples/web
  npm ci --no-audit --no-fund --loglevel=error
  npm run build --silent
)

# The page signs people in through POST /dev/token, which only a dev-mode
# server has: one without a JWT key, on a loopback address.
if [ -n "${SWITCHBOARD_JWT_SECRET:-}${SWITCHBOARD_JWT_PUBLIC_KEY:-}" ]; then
  echo "note: a JWT key is set in the environment, so this is not dev mode:" >&2
  echo "      the page will ask for a token instead of a name" >&2
fi
listen="${SWITCHBOARD_LISTEN:-127.0.0.1:3000}"
cat <<MSG

==> starting the server (the first build takes a few minutes)
    When it logs "listening", open http://$listen/
    Sign in with a name, then open a second window (a private one, or
    another browser) as someone else, and join the same room.
    Ctrl-C stops it.

MSG
# SWITCHBOARD_LISTEN (not --listen) moves it, so that the address above is right.
exec cargo run --release --bin switchboard -- --static-dir examples/web/dist "$@"
