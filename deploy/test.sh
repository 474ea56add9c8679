#!/usr/bin/env bash
# The whole check, from a fresh machine: environment, local services, lint, types, import rules, tests.
#   bash deploy/test.sh [pytest args]        everything (what CI runs)
#   bash deploy/test.sh unit [pytest args]   the fast lane: no PostgreSQL, Redis or Kafka, tests/unit only
# Integration tests talk to real services; if one cannot start this fails with the reason.
set -euo pipefail
COMPONENT=test
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$STREAMSYNC_ROOT"

started=$(date +%s)
lane=all
if [ "${1:-}" = unit ]; then
    lane=unit
    shift
    bash deploy/bootstrap.sh
else
    # Kafka is chosen by the test fixtures: STREAMSYNC_KAFKA_BOOTSTRAP, testcontainers, or a broker of the run's own.
    bash deploy/stack.sh up --no-kafka
fi
eval "$(bash deploy/stack.sh env)"

log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "import rules"
lint-imports
log "pytest ($lane)"
rc=0
if [ "$lane" = unit ]; then
    python -m pytest -p no:cacheprovider tests/unit "$@" || rc=$?
else
    python -m pytest -p no:cacheprovider "$@" || rc=$?
fi
if [ "$rc" = 5 ]; then
    die "pytest collected no tests"
fi
log "finished in $(($(date +%s) - started))s with exit code $rc"
exit "$rc"
