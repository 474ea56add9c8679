#!/usr/bin/env bash
# The demo, from a fresh machine: local stack up, a worker running, sample events synced, result and lag shown.
#   bash deploy/demo.sh [events.jsonl]
set -euo pipefail
COMPONENT=demo
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$STREAMSYNC_ROOT"

EVENTS="${1:-examples/ipam-vlans.jsonl}"
DEMO_DB=streamsync_demo
WORKER_PID="$RUN_DIR/demo-worker.pid"
WORKER_LOG="$LOG_DIR/demo-worker.log"

bash deploy/stack.sh up
eval "$(bash deploy/stack.sh env)"
export NAUTOBOT_DB_NAME="$DEMO_DB" STREAMSYNC_LOG_FORMAT=json

log "fresh Nautobot database $DEMO_DB (cloned from the migrated template)"
stop_pid "previous demo worker" "$WORKER_PID" 60
python -m deploy.devdb create "$DEMO_DB" >/dev/null

log "starting streamsync worker (log: $WORKER_LOG)"
streamsync worker --batch-timeout 0.5 >"$WORKER_LOG" 2>&1 &
echo $! >"$WORKER_PID"

log "publishing $EVENTS"
streamsync publish ipam "$EVENTS"

want=$(python - "$EVENTS" <<'PY'
import json, sys
state = {}
for line in open(sys.argv[1]):
    if line.strip():
        e = json.loads(line)
        state[json.dumps(e["key"], sort_keys=True)] = e["op"]
print(sum(op == "upsert" for op in state.values()))
PY
)
log "waiting for the worker to apply them ($want VLANs expected)"
for _ in $(seq 1 240); do
    pid_alive "$WORKER_PID" || fail_with_log "worker" "$WORKER_LOG" "exited"
    grep -q '"batch committed"' "$WORKER_LOG" && \
        have=$(python -c 'from streamsync.cli.nautobot_setup import setup; setup(); from nautobot.ipam.models import VLAN; print(VLAN.objects.count())' 2>/dev/null) && \
        [ "$have" = "$want" ] && break
    sleep 1
done
[ "${have:-}" = "$want" ] || fail_with_log "worker" "$WORKER_LOG" "did not apply the events within 240s"

python deploy/demo_report.py
echo
log "consumer lag"
streamsync lag
echo
log "the worker keeps running (pid $(cat "$WORKER_PID")); publish more with: streamsync publish ipam FILE.jsonl"
log "stop it with: kill \$(cat $WORKER_PID); stop the stack with: bash deploy/stack.sh down"
