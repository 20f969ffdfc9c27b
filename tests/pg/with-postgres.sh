#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL (Debian's `postgresql` package):
# initdb into a temp dir (as the `postgres` user when run as root), a free
# 127.0.0.1 port and a unix socket dir, fsync off (a test instance), stopped
# and removed when the command ends (OMK_TEST_PG_FSYNC=on keeps fsync, for
# benchmarks). The command sees:
#   OMK_TEST_PG_URL     postgres://omk:omk-test@127.0.0.1:PORT/postgres
#                       (password auth over TCP)
#   OMK_TEST_PG_SOCKET  the unix socket directory (trust auth, user omk)
#   OMK_TEST_PG_BIN     PostgreSQL's bin directory (pg_ctl, for restarts)
#   OMK_TEST_PG_DATA    the data directory
#   OMK_TEST_PG_CTL     pg_ctl for this server (stop, restart)
# Usage: tests/pg/with-postgres.sh CMD [ARGS...]
set -euo pipefail

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "with-postgres: installing Debian's postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    bin=$(find_bin)
  fi
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "with-postgres: PostgreSQL's initdb not found (apt-get install postgresql)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/omk-pg.XXXXXX)
chmod 755 "$dir"
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

printf 'omk-test\n' > "$dir/pw"
chmod 644 "$dir/pw"
as_pg "$bin/initdb" -D "$dir/data" -U omk --pwfile="$dir/pw" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
mkdir -p "$dir/sock"
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/sock"; fi
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=${OMK_TEST_PG_FSYNC:-off} -c full_page_writes=${OMK_TEST_PG_FSYNC:-off} -c max_connections=200" \
  start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

# pg_ctl for this server, as its owner, its output to the server's log:
# `$OMK_TEST_PG_CTL stop -m immediate`, `$OMK_TEST_PG_CTL restart`
# (a restart of a stopped server starts it with its last options).
as_owner=""
if [ "$(id -u)" = 0 ]; then as_owner="runuser -u postgres --"; fi
printf '#!/bin/sh\nexec %s "%s/pg_ctl" -D "%s/data" -w -t 60 -l "%s/server.log" "$@" </dev/null >/dev/null\n' \
  "$as_owner" "$bin" "$dir" "$dir" > "$dir/pg_ctl"
chmod 755 "$dir/pg_ctl"

export OMK_TEST_PG_URL="postgres://omk:omk-test@127.0.0.1:$port/postgres"
export OMK_TEST_PG_SOCKET="$dir/sock"
export OMK_TEST_PG_BIN="$bin"
export OMK_TEST_PG_DATA="$dir/data"
export OMK_TEST_PG_PORT="$port"
export OMK_TEST_PG_CTL="$dir/pg_ctl"
"$@"
