#!/usr/bin/env bash
# Several switchboard nodes behind nginx on this machine, in one command: the
# recipe of docs/deployment.md ("Several nodes"), run as written.
#
# Needs Redis and PostgreSQL running, psql and nginx installed. It creates the
# database if it is missing, builds the release binary if there is none,
# starts one node per port (one Redis, one database), writes an nginx
# configuration that includes deploy/nginx/switchboard.conf with these ports,
# runs nginx in the foreground, and prints the address once it answers.
# Ctrl-C (or SIGTERM) stops everything it started.
#
# Environment (defaults in brackets):
#   PORTS            node ports ["3001 3002 3003"]
#   NGINX_PORT       the address clients use [8080]
#   POSTGRES_URL     the server to create the database on [postgres://postgres@127.0.0.1:5432/postgres]
#   DATABASE         the database's name [switchboard]
#   REDIS_URL        [redis://127.0.0.1:6379]
#   SWITCHBOARD_BIN  the binary [target/release/switchboard, built if missing]
#   SWITCHBOARD_JWT_SECRET, SWITCHBOARD_API_KEY  [made up, and printed]
# Extra arguments go to every node, e.g. scripts/cluster.sh --redis-prefix demo
set -euo pipefail
cd "$(dirname "$0")/.."

ports=(${PORTS:-3001 3002 3003})
nginx_port="${NGINX_PORT:-8080}"
postgres_url="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
database="${DATABASE:-switchboard}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
nginx_bin="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"

for tool in psql "$nginx_bin"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (see docs/deployment.md#several-nodes)" >&2; exit 1; }
done

# 1. One database for every node (their messages, sequence numbers and
# documents): created once.
if ! psql "$postgres_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  psql "$postgres_url" -qc "CREATE DATABASE \"$database\""
  echo "==> created database $database"
fi
database_url="${postgres_url%/*}/$database"

# 2. The binary, built once (not once per node).
bin="${SWITCHBOARD_BIN:-target/release/switchboard}"
if [ ! -x "$bin" ]; then
  echo "==> building $bin (cargo build --release --locked; a few minutes the first time)"
  cargo build --release --locked --quiet
fi

# 3. The nodes: same key, same Redis, same database.
export SWITCHBOARD_JWT_SECRET="${SWITCHBOARD_JWT_SECRET:-$(head -c 32 /dev/urandom | base64)}"
export SWITCHBOARD_API_KEY="${SWITCHBOARD_API_KEY:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}"
export SWITCHBOARD_REDIS_URL="$redis_url" SWITCHBOARD_DATABASE_URL="$database_url"
work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-cluster.XXXXXX")"
pids=()
stop() {
  trap - EXIT INT TERM
  [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 0' INT TERM
for port in "${ports[@]}"; do
  "$bin" --listen "127.0.0.1:$port" "$@" 2>"$work/node-$port.log" &
  pids+=($!)
done

# 4. nginx in front: the shipped snippet with these ports, inside a minimal
# main configuration that keeps its files in $work.
servers=""
for port in "${ports[@]}"; do servers+="    server 127.0.0.1:$port;"$'\n'; done
awk -v servers="$servers" -v listen="listen 127.0.0.1:$nginx_port;" '
  /^    server 127\.0\.0\.1:[0-9]+;$/ { if (!done) { printf "%s", servers; done = 1 } next }
  /^    listen 8080;$/ { print "    " listen; next }
  { print }
' deploy/nginx/switchboard.conf >"$work/switchboard.conf"
cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  include $work/switchboard.conf;
}
CONF
"$nginx_bin" -p "$work" -c "$work/nginx.conf" &
pids+=($!)

# 5. Ready when nginx answers and every node does.
url="http://127.0.0.1:$nginx_port"
for _ in $(seq 1 300); do
  up=0
  curl -fs "$url/healthz" >/dev/null 2>&1 && up=1
  for port in "${ports[@]}"; do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || up=0
  done
  [ "$up" = 1 ] && break
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a process exited; logs in $work:" >&2; tail -n 5 "$work"/*.log >&2; exit 1; }
  done
  sleep 0.2
done
[ "$up" = 1 ] || { echo "not ready after 60 s; logs in $work" >&2; exit 1; }
echo "==> ready: $url (nodes on ${ports[*]}, database $database, Redis $redis_url)"
echo "    API key: $SWITCHBOARD_API_KEY"
echo "    a token: $("$bin" token --sub alice)"
echo "    Ctrl-C stops the nodes and nginx."
wait -n "${pids[@]}" || true
echo "a process exited; logs in $work:" >&2
tail -n 5 "$work"/*.log >&2
exit 1
