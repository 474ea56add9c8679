#!/usr/bin/env bash
# Redis for Nautobot (cache, locks, Celery broker), from Debian's packages.
#   deploy/redis.sh start|stop|status
# Listens on 127.0.0.1:$STREAMSYNC_REDIS_PORT (default 16379); no persistence.
set -euo pipefail
COMPONENT=redis
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

REDIS_PORT="${STREAMSYNC_REDIS_PORT:-16379}"
REDIS_DIR="$STREAMSYNC_HOME/redis"
PIDFILE="$RUN_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

start() {
    apt_install redis-server
    # A pid file can outlive its process (machine restart, kill -9) and its pid be reused: ask Redis.
    if pid_alive "$PIDFILE" && [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        log "already running on 127.0.0.1:$REDIS_PORT (pid $(cat "$PIDFILE"))"
        return 0
    fi
    rm -f "$PIDFILE"
    if port_open 127.0.0.1 "$REDIS_PORT"; then
        die "port $REDIS_PORT is taken by another process: $(port_holder "$REDIS_PORT"). Set STREAMSYNC_REDIS_PORT."
    fi
    mkdir -p "$REDIS_DIR"
    cat >"$REDIS_DIR/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
daemonize yes
pidfile $PIDFILE
logfile $REDIS_LOG
dir $REDIS_DIR
save ""
appendonly no
CONF
    log "starting on 127.0.0.1:$REDIS_PORT"
    redis-server "$REDIS_DIR/redis.conf" || fail_with_log redis "$REDIS_LOG" "redis-server failed"
    local i
    for ((i = 0; i < 100; i++)); do
        if [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.1
    done
    fail_with_log redis "$REDIS_LOG" "not answering PING after 10s"
}

status() {
    if pid_alive "$PIDFILE"; then
        echo "redis: running on 127.0.0.1:$REDIS_PORT (pid $(cat "$PIDFILE"))"
    else
        echo "redis: stopped"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop_pid redis "$PIDFILE" 10 ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
