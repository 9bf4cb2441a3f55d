# Sourced by scripts/test.sh: installs what the tests need (as root on
# Debian) or says what is missing, then starts throwaway PostgreSQL and Redis
# instances in a temporary directory on free loopback ports, so that two runs
# never collide and the machine's own services are not needed. The instances
# stop when the sourcing shell exits.

apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: $* — install it (Debian: apt-get install $*) and run this again" >&2
    exit 1
  fi
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  echo "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A program of PostgreSQL's server (initdb, pg_ctl), on PATH or where Debian puts it.
pg_bin() {
  command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

command -v cargo >/dev/null || { echo "missing: cargo — install Rust (https://rustup.rs) and run this again" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
[ -n "$(pg_bin initdb)" ] || apt_install postgresql
command -v redis-server >/dev/null || apt_install redis-server
[ -x "${NGINX_BIN:-/usr/sbin/nginx}" ] || apt_install nginx-light
# schemathesis (scripts/schemathesis.sh) goes into a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3 python3-venv
# The demo page's test drives Debian's Chromium (never a downloaded browser).
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium

SERVICES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-test.XXXXXX")"
stop_services() {
  [ -f "$SERVICES_DIR/redis.pid" ] && kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null
  [ -d "$SERVICES_DIR/pg" ] && $pg_as "$(pg_bin pg_ctl)" -D "$SERVICES_DIR/pg" -m immediate stop >/dev/null 2>&1
  rm -rf "$SERVICES_DIR"
}
trap stop_services EXIT

# PostgreSQL will not run as root: as root, the instance belongs to `postgres`
# (the user Debian's package creates).
pg_as=""
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  pg_as="runuser -u postgres --"
  chmod 755 "$SERVICES_DIR"
fi
mkdir "$SERVICES_DIR/pg"
[ -z "$pg_as" ] || chown postgres "$SERVICES_DIR/pg"
pg_port="$(free_port)"
$pg_as "$(pg_bin initdb)" -D "$SERVICES_DIR/pg" -U postgres --auth=trust --no-sync -E UTF8 >"$SERVICES_DIR/initdb.log" 2>&1 \
  || { cat "$SERVICES_DIR/initdb.log" >&2; echo "initdb failed" >&2; exit 1; }
$pg_as "$(pg_bin pg_ctl)" -D "$SERVICES_DIR/pg" -w -l "$SERVICES_DIR/pg/log" \
  -o "-p $pg_port -k $SERVICES_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null \
  || { cat "$SERVICES_DIR/pg/log" >&2; echo "PostgreSQL did not start" >&2; exit 1; }
$pg_as "$(pg_bin createdb)" -h 127.0.0.1 -p "$pg_port" -U postgres test
export SWITCHBOARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/test"

redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --daemonize yes --pidfile "$SERVICES_DIR/redis.pid" --dir "$SERVICES_DIR" --logfile "$SERVICES_DIR/redis.log"
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null || { cat "$SERVICES_DIR/redis.log" >&2; echo "Redis did not start" >&2; exit 1; }
export SWITCHBOARD_TEST_REDIS="127.0.0.1:$redis_port"

echo "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port (in $SERVICES_DIR)"
