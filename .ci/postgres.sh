#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package.
#
#   url=$(.ci/postgres.sh start DIR)   # DIR: an empty directory; prints the server's URL
#   .ci/postgres.sh stop DIR           # stops it (a no-op if it never started)
#
# The server keeps its data, socket and log in DIR, listens on 127.0.0.1 only, on a free
# port, and trusts local connections: for a test machine, not for anything else.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=$(realpath "${2:?usage: postgres.sh start|stop DIR}")

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

case $cmd in
start)
    if [ -z "$(bin)" ] || [ ! -x "$(bin)/initdb" ]; then
        as_root apt-get update -q >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
    fi
    pg=$(bin)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_pg "$pg/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log"
    # fsync off: a crash loses nothing that matters here, and the tests run faster.
    as_pg "$pg/pg_ctl" start -w -D "$dir/data" -l "$dir/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" >&2
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$(bin)/pg_ctl" stop -w -m fast -D "$dir/data" >&2
    fi
    ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
