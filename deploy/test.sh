#!/usr/bin/env bash
# The whole check, from a fresh machine: environment, local services, lint, types, tests.
#   bash deploy/test.sh [pytest args]
# Integration tests talk to real services; if one cannot start this fails with the reason.
set -euo pipefail
COMPONENT=test
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$STREAMSYNC_ROOT"

started=$(date +%s)
# Kafka is chosen by the test fixtures: STREAMSYNC_KAFKA_BOOTSTRAP, testcontainers, or deploy/kafka.sh.
bash deploy/stack.sh up --no-kafka
eval "$(bash deploy/stack.sh env)"

log "ruff"
ruff check .
ruff format --check .
log "mypy"
mypy
log "pytest"
rc=0
python -m pytest -p no:cacheprovider "$@" || rc=$?
if [ "$rc" = 5 ]; then
    die "pytest collected no tests"
fi
log "finished in $(($(date +%s) - started))s with exit code $rc"
exit "$rc"
