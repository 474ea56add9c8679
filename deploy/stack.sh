#!/usr/bin/env bash
# The local stack, on a fresh Debian machine or an existing one, idempotently.
#   deploy/stack.sh up [--no-kafka]   Python env, Chromium, PostgreSQL, Redis, Kafka, migrated Nautobot template
#   deploy/stack.sh down              stop what `up` started (by pid file, never by name)
#   deploy/stack.sh status
#   deploy/stack.sh env               shell exports for using the stack: eval "$(deploy/stack.sh env)"
# Existing services instead of local ones: set NAUTOBOT_DB_HOST (with NAUTOBOT_DB_PORT/USER/PASSWORD),
# NAUTOBOT_REDIS_HOST (with NAUTOBOT_REDIS_PORT) or STREAMSYNC_KAFKA_BOOTSTRAP before `up`.
set -euo pipefail
COMPONENT=stack
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
DEPLOY="$STREAMSYNC_ROOT/deploy"

export NAUTOBOT_CONFIG="${NAUTOBOT_CONFIG:-$DEPLOY/nautobot_config.py}"

up() {
    local with_kafka=1
    [ "${1:-}" = "--no-kafka" ] && with_kafka=0
    bash "$DEPLOY/bootstrap.sh"
    bash "$DEPLOY/browser.sh"
    if [ -n "${NAUTOBOT_DB_HOST:-}" ]; then log "PostgreSQL: using $NAUTOBOT_DB_HOST"; else bash "$DEPLOY/postgres.sh" start; fi
    if [ -n "${NAUTOBOT_REDIS_HOST:-}" ]; then log "Redis: using $NAUTOBOT_REDIS_HOST"; else bash "$DEPLOY/redis.sh" start; fi
    if [ -n "${STREAMSYNC_KAFKA_BOOTSTRAP:-}" ]; then
        log "Kafka: using $STREAMSYNC_KAFKA_BOOTSTRAP"
    elif [ "$with_kafka" = 1 ]; then
        bash "$DEPLOY/kafka.sh" start
    fi
    log "Nautobot database template"
    (cd "$STREAMSYNC_ROOT" && PATH="$STREAMSYNC_ROOT/.venv/bin:$PATH" .venv/bin/python -m deploy.devdb template >/dev/null) \
        || die "could not prepare the migrated Nautobot template database"
    log "up"
}

down() {
    [ -n "${STREAMSYNC_KAFKA_BOOTSTRAP:-}" ] || bash "$DEPLOY/kafka.sh" stop
    [ -n "${NAUTOBOT_REDIS_HOST:-}" ] || bash "$DEPLOY/redis.sh" stop
    [ -n "${NAUTOBOT_DB_HOST:-}" ] || bash "$DEPLOY/postgres.sh" stop
}

status() {
    local rc=0
    bash "$DEPLOY/postgres.sh" status || rc=$?
    bash "$DEPLOY/redis.sh" status || rc=$?
    bash "$DEPLOY/kafka.sh" status || rc=$?
    return "$rc"
}

env_exports() {
    printf 'export NAUTOBOT_CONFIG=%q\n' "$NAUTOBOT_CONFIG"
    printf 'export STREAMSYNC_HOME=%q\n' "$STREAMSYNC_HOME"
    printf 'export PATH=%q:"$PATH"\n' "$STREAMSYNC_ROOT/.venv/bin"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    env) env_exports ;;
    *) echo "usage: $0 up [--no-kafka]|down|status|env" >&2; exit 2 ;;
esac
