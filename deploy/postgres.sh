#!/usr/bin/env bash
# PostgreSQL for Nautobot, from Debian's packages, in a cluster of our own.
#   deploy/postgres.sh start|stop|status
# The cluster lives in $STREAMSYNC_HOME/postgres and listens on 127.0.0.1:$STREAMSYNC_PG_PORT
# (default 15432) so it never collides with a system PostgreSQL.
set -euo pipefail
COMPONENT=postgres
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

PG_PORT="${STREAMSYNC_PG_PORT:-15432}"
PG_USER="${NAUTOBOT_DB_USER:-nautobot}"
PG_PASSWORD="${NAUTOBOT_DB_PASSWORD:-nautobot}"
PG_DIR="$STREAMSYNC_HOME/postgres"
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/sock"
PG_LOG="$LOG_DIR/postgres.log"

pg_bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || return 1
    echo "$dir"
}

# PostgreSQL refuses to run as root: root runs it as the postgres user.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    apt_install postgresql
    local bin
    bin=$(pg_bindir) || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    mkdir -p "$PG_DIR" "$PG_SOCK"
    touch "$PG_LOG"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$PG_DIR" "$PG_SOCK" "$PG_LOG"
    fi
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "initialising cluster in $PG_DATA"
        as_owner "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$LOG_DIR/initdb.log" 2>&1 \
            || fail_with_log postgres "$LOG_DIR/initdb.log" "initdb failed"
        # A throwaway development cluster: durability traded for speed (migrations, tests).
        cat >>"$PG_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    fi
    if as_owner "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "already running on 127.0.0.1:$PG_PORT"
    else
        if port_open 127.0.0.1 "$PG_PORT"; then
            die "port $PG_PORT is taken by another process: $(port_holder "$PG_PORT"). Set STREAMSYNC_PG_PORT."
        fi
        log "starting on 127.0.0.1:$PG_PORT"
        as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
            -o "-p $PG_PORT -k $PG_SOCK" start >/dev/null \
            || fail_with_log postgres "$PG_LOG" "did not start"
    fi
    # The application role: superuser because the dev stack clones template databases for every run.
    as_owner "$bin/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
}

stop() {
    local bin
    bin=$(pg_bindir) || { log "not installed"; return 0; }
    if [ -f "$PG_DATA/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "stopping"
        # pg_ctl signals the postmaster named in its own pid file.
        as_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    else
        log "not running"
    fi
}

status() {
    local bin
    bin=$(pg_bindir) || { echo "postgres: not installed"; return 3; }
    if as_owner "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        echo "postgres: running on 127.0.0.1:$PG_PORT (data $PG_DATA)"
    else
        echo "postgres: stopped"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
