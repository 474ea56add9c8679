#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) for streamsync.
#
# Kafka's jars come from Maven Central through Maven (deploy/kafka/pom.xml) and run
# on the machine's Java 17+: no Kafka tarball, no Kafka shell scripts, no Docker.
#
# Usage: deploy/kafka.sh {fetch|start|stop|status|reset}
#   fetch   resolve the Kafka jars into $STREAMSYNC_HOME/kafka/lib-<version> (cached)
#   start   fetch, format storage if needed, start the broker, wait until it is ready
#   stop    stop the broker started by this script (TERM, then KILL after 30 s)
#   status  print running/stopped; exit 0 if running, 3 if not
#   reset   stop and delete the broker's data directory
#
# Environment:
#   STREAMSYNC_HOME                  state root (default: see deploy/lib/common.sh)
#   STREAMSYNC_KAFKA_VERSION         Kafka version from Maven Central (default: 4.1.1)
#   STREAMSYNC_KAFKA_PORT            client (PLAINTEXT) port on 127.0.0.1 (default: 9092)
#   STREAMSYNC_KAFKA_CONTROLLER_PORT KRaft controller port on 127.0.0.1 (default: 9093)
#   STREAMSYNC_KAFKA_START_TIMEOUT   seconds to wait for readiness while the broker's log shows no progress
#                                    (default: 90); a broker loading many partitions logs as it goes
#   STREAMSYNC_KAFKA_START_LIMIT     seconds to wait for readiness in all (default: 900)
#   STREAMSYNC_KAFKA_HEAP_OPTS       JVM heap flags (default: -Xms256m -Xmx1g)
#   STREAMSYNC_KAFKA_JAVA_OPTS       extra JVM flags (default: empty)
#   STREAMSYNC_KAFKA_EXTRA_PROPERTIES a file appended to server.properties on each start; a key given
#                                    there wins over the one above it (e.g. listeners with an SSL or
#                                    SASL_SSL listener added, ssl.*, sasl.*; see docs/security.md)
#   STREAMSYNC_KAFKA_SCRAM_CREDENTIALS SCRAM users created when the storage is first formatted, one per
#                                    line: SCRAM-SHA-512=[name=alice,password=alice-secret]
#                                    (they are ignored once the data directory exists: reset first)
#   JAVA_HOME                        if set, $JAVA_HOME/bin/java is used
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONFIG="$SCRIPT_DIR/kafka/log4j2.yaml"

DEFAULT_KAFKA_VERSION="4.1.1" # keep in step with <kafka.version> in kafka/pom.xml
KAFKA_VERSION="${STREAMSYNC_KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}"
# shellcheck source=deploy/lib/common.sh
COMPONENT=kafka . "$SCRIPT_DIR/lib/common.sh" # sets the STREAMSYNC_HOME default shared by the stack
PORT="${STREAMSYNC_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${STREAMSYNC_KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${STREAMSYNC_KAFKA_START_TIMEOUT:-90}"
START_LIMIT="${STREAMSYNC_KAFKA_START_LIMIT:-900}"
HEAP_OPTS="${STREAMSYNC_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
EXTRA_JAVA_OPTS="${STREAMSYNC_KAFKA_JAVA_OPTS:-}"
EXTRA_PROPERTIES="${STREAMSYNC_KAFKA_EXTRA_PROPERTIES:-}"
SCRAM_CREDENTIALS="${STREAMSYNC_KAFKA_SCRAM_CREDENTIALS:-}"
HOST="127.0.0.1"

KAFKA_DIR="$STREAMSYNC_HOME/kafka"
LIBDIR="$KAFKA_DIR/lib-$KAFKA_VERSION"
LIB_MARKER="$LIBDIR/.complete"
DATA_DIR="$KAFKA_DIR/data"
SERVER_PROPS="$KAFKA_DIR/server.properties"
RUN_DIR="$STREAMSYNC_HOME/run"
PIDFILE="$RUN_DIR/kafka.pid"
LOCKFILE="$RUN_DIR/kafka.lock"
LOG_DIR="$STREAMSYNC_HOME/log"
LOG_FILE="$LOG_DIR/kafka.log"
READY_LINE="Kafka Server started"

if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

log() { echo "[kafka] $*"; }
err() { echo "[kafka] ERROR: $*" >&2; }
die() {
  err "$*"
  exit 1
}

validate_settings() {
  [[ "$KAFKA_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.-][A-Za-z0-9]+)*$ ]] ||
    die "STREAMSYNC_KAFKA_VERSION='$KAFKA_VERSION' is not a version like 4.1.1"
  local p
  for p in "$PORT" "$CONTROLLER_PORT" "$START_TIMEOUT" "$START_LIMIT"; do
    [[ "$p" =~ ^[0-9]+$ ]] || die "not a number: '$p' (check STREAMSYNC_KAFKA_* settings)"
  done
  [[ "$PORT" != "$CONTROLLER_PORT" ]] ||
    die "STREAMSYNC_KAFKA_PORT and STREAMSYNC_KAFKA_CONTROLLER_PORT are both $PORT"
  [[ -z "$EXTRA_PROPERTIES" || -r "$EXTRA_PROPERTIES" ]] ||
    die "STREAMSYNC_KAFKA_EXTRA_PROPERTIES='$EXTRA_PROPERTIES' is not a readable file"
}

# Serialise start/stop/reset of this script (the lock fd is closed for the broker).
LOCKED=0
take_lock() {
  ((LOCKED == 0)) || return 0
  LOCKED=1
  mkdir -p "$RUN_DIR"
  exec 9>"$LOCKFILE"
  if command -v flock >/dev/null 2>&1; then
    flock -w 180 9 || die "another deploy/kafka.sh holds $LOCKFILE for over 180 s"
  fi
}

# ---------------------------------------------------------------- tools

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# ensure_tools [need_mvn=1]: Maven is only needed while the jars are not cached yet.
ensure_tools() {
  local need_mvn="${1:-1}"
  if command -v "$JAVA" >/dev/null 2>&1 &&
    { [[ "$need_mvn" == 0 ]] || command -v mvn >/dev/null 2>&1; }; then
    :
  else
    log "java or mvn missing: installing openjdk-17-jre-headless and maven with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install Java 17+ and Maven yourself"
    local pkgs=(openjdk-17-jre-headless maven)
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"; then
      log "apt-get install failed: running apt-get update and retrying"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"
    fi
    if [[ "$JAVA" != "java" ]] && ! command -v "$JAVA" >/dev/null 2>&1; then
      JAVA="java"
    fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java still missing after apt-get install"
    command -v mvn >/dev/null 2>&1 || die "mvn still missing after apt-get install"
  fi
  local major
  major="$("$JAVA" -XshowSettings:properties -version 2>&1 |
    awk -F= '/java\.specification\.version/ { gsub(/[[:space:]]/, "", $2); print $2 }')"
  major="${major#1.}"
  major="${major%%.*}"
  if [[ -z "$major" || ! "$major" =~ ^[0-9]+$ || "$major" -lt 17 ]]; then
    die "Kafka $KAFKA_VERSION needs Java 17+, but '$JAVA' is Java '${major:-unknown}' (set JAVA_HOME to a JDK/JRE 17+)"
  fi
}

# ---------------------------------------------------------------- fetch

cmd_fetch() {
  validate_settings
  take_lock
  if [[ -f "$LIB_MARKER" ]]; then
    ensure_tools 0
    return 0
  fi
  ensure_tools
  [[ -f "$POM" ]] || die "missing $POM"
  mkdir -p "$KAFKA_DIR"
  local tmp="$LIBDIR.partial.$$"
  rm -rf "$tmp"
  log "fetching Kafka $KAFKA_VERSION jars with Maven into $LIBDIR"
  local t0=$SECONDS
  local mvn_out="$KAFKA_DIR/mvn-fetch.log"
  if ! mvn -q -B -Dstyle.color=never -f "$POM" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime \
    >"$mvn_out" 2>&1; then
    cat "$mvn_out" >&2
    rm -rf "$tmp"
    die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (output above, also in $mvn_out)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$tmp"
    die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not in the copied jars"
  }
  echo "kafka_2.13 $KAFKA_VERSION" >"$tmp/.complete"
  rm -rf "$LIBDIR"
  mv "$tmp" "$LIBDIR"
  log "fetched $(find "$LIBDIR" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- helpers

# PID of the broker this script started, or nothing. Checks the command line so a
# recycled PID that now belongs to another process is never reported (or killed).
broker_pid() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid
  pid="$(tr -cd '0-9' <"$PIDFILE")"
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 0
  fi
  echo "$pid"
}

port_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

port_holder() {
  if command -v ss >/dev/null 2>&1; then
    ss -ltnp "sport = :$1" 2>/dev/null || true
  else
    echo "(install iproute2 for 'ss' to see which process it is)"
  fi
}

fail_with_log() {
  err "$*"
  if [[ -f "$LOG_FILE" ]]; then
    echo "[kafka] last 40 lines of $LOG_FILE:" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
  fi
  exit 1
}

write_server_properties() {
  mkdir -p "$KAFKA_DIR" "$DATA_DIR"
  cat >"$SERVER_PROPS" <<EOF
# Written by deploy/kafka.sh on each start; edits here are overwritten.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
log.dirs=$DATA_DIR

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

group.initial.rebalance.delay.ms=0
EOF
  if [[ -n "$EXTRA_PROPERTIES" ]]; then
    # Java's Properties keeps the last value of a key: what is appended here wins.
    {
      echo
      echo "# Appended from STREAMSYNC_KAFKA_EXTRA_PROPERTIES=$EXTRA_PROPERTIES"
      cat "$EXTRA_PROPERTIES"
    } >>"$SERVER_PROPS"
  fi
}

format_storage_if_needed() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    local formatted_with=""
    [[ -f "$DATA_DIR/.streamsync-kafka-version" ]] &&
      formatted_with="$(cat "$DATA_DIR/.streamsync-kafka-version")"
    if [[ -n "$formatted_with" && "$formatted_with" != "$KAFKA_VERSION" ]]; then
      log "note: data dir was formatted by Kafka $formatted_with, now starting $KAFKA_VERSION" \
        "(if it fails to start, run: deploy/kafka.sh reset)"
    fi
    return 0
  fi
  local cluster_id
  cluster_id="$("$JAVA" -cp "$LIBDIR/*" -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
    kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | tail -n 1)"
  [[ -n "$cluster_id" ]] || fail_with_log "could not generate a cluster id"
  # SCRAM users live in KRaft's metadata log: they are written with the first records, at format time.
  local -a scram=()
  local entry
  while IFS= read -r entry; do
    if [[ -n "${entry//[[:space:]]/}" ]]; then
      scram+=(--add-scram "$entry")
    fi
  done <<<"$SCRAM_CREDENTIALS"
  log "formatting $DATA_DIR (cluster id $cluster_id, $((${#scram[@]} / 2)) SCRAM user(s))"
  if ! "$JAVA" -cp "$LIBDIR/*" -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$SERVER_PROPS" --standalone "${scram[@]}" \
    >>"$LOG_FILE" 2>&1; then
    fail_with_log "kafka.tools.StorageTool format failed"
  fi
  echo "$KAFKA_VERSION" >"$DATA_DIR/.streamsync-kafka-version"
}

# Ready = the process lives, the client port accepts TCP, and the log has the
# broker's "Kafka Server started" line (logged once the broker serves clients).
# A broker with thousands of partitions takes minutes to load them, logging as it
# goes: the wait gives up after START_TIMEOUT s without a new log line, or START_LIMIT s in all.
wait_ready() {
  local pid="$1" started=$SECONDS size=-1 now
  local stalled_since=$SECONDS
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      fail_with_log "broker process $pid exited during startup"
    fi
    if grep -q "$READY_LINE" "$LOG_FILE" 2>/dev/null && port_open "$PORT"; then
      return 0
    fi
    now="$(stat -c %s "$LOG_FILE" 2>/dev/null || echo 0)"
    if [[ "$now" != "$size" ]]; then
      size="$now"
      stalled_since=$SECONDS
    fi
    if ((SECONDS - stalled_since >= START_TIMEOUT)); then
      fail_with_log "broker (pid $pid) not ready, and its log shows no progress for ${START_TIMEOUT} s;" \
        "it is left running, stop it with: deploy/kafka.sh stop"
    fi
    if ((SECONDS - started >= START_LIMIT)); then
      fail_with_log "broker (pid $pid) not ready after ${START_LIMIT} s; it is left running," \
        "stop it with: deploy/kafka.sh stop"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- commands

cmd_start() {
  cmd_fetch
  take_lock
  local pid
  pid="$(broker_pid)"
  if [[ -n "$pid" ]]; then
    log "already running (pid $pid), bootstrap $HOST:$PORT"
    wait_ready "$pid"
    return 0
  fi
  rm -f "$PIDFILE"

  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      err "port $HOST:$p is already in use, and not by the broker recorded in $PIDFILE:"
      port_holder "$p" >&2
      die "free port $p or set STREAMSYNC_KAFKA_PORT / STREAMSYNC_KAFKA_CONTROLLER_PORT"
    fi
  done

  mkdir -p "$LOG_DIR" "$RUN_DIR"
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"

  write_server_properties
  format_storage_if_needed

  local partitions
  partitions="$(find "$DATA_DIR" -mindepth 1 -maxdepth 1 -type d -name '*-[0-9]*' 2>/dev/null | wc -l)"
  if ((partitions > 1000)); then
    log "note: $DATA_DIR holds $partitions partitions; loading them slows the start" \
      "(delete topics nobody reads, or deploy/kafka.sh reset a scratch broker)"
  fi
  log "starting Kafka $KAFKA_VERSION on $HOST:$PORT (controller $HOST:$CONTROLLER_PORT), log $LOG_FILE"
  local t0=$SECONDS
  local -a heap extra
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a extra <<<"$EXTRA_JAVA_OPTS"
  # The inner bash writes its own PID (which exec turns into the JVM's) so the pidfile
  # is right even if setsid has to fork. fd 9 (the lock) is not passed on.
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
    "$JAVA" "${heap[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
    "${extra[@]}" \
    -cp "$LIBDIR/*" kafka.Kafka "$SERVER_PROPS" \
    </dev/null >>"$LOG_FILE" 2>&1 9>&- &

  local i
  for i in $(seq 1 50); do
    [[ -s "$PIDFILE" ]] && break
    sleep 0.1
  done
  pid="$(tr -cd '0-9' <"$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || fail_with_log "broker did not write its pidfile $PIDFILE (i=$i)"

  wait_ready "$pid"
  log "ready in $((SECONDS - t0)) s (pid $pid), bootstrap $HOST:$PORT"
}

cmd_stop() {
  take_lock
  local pid
  pid="$(broker_pid)"
  if [[ -z "$pid" ]]; then
    if [[ -f "$PIDFILE" ]]; then
      log "stale pidfile removed (broker was not running)"
      rm -f "$PIDFILE"
    else
      log "not running"
    fi
    return 0
  fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "still alive after 30 s: sending KILL to $pid"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$PIDFILE"
  log "stopped"
}

cmd_status() {
  local pid
  pid="$(broker_pid)"
  if [[ -n "$pid" ]]; then
    if port_open "$PORT"; then
      echo "[kafka] running (pid $pid), bootstrap $HOST:$PORT"
    else
      echo "[kafka] running (pid $pid) but $HOST:$PORT is not accepting connections yet"
    fi
    return 0
  fi
  echo "[kafka] stopped (bootstrap would be $HOST:$PORT)"
  return 3
}

cmd_reset() {
  cmd_stop
  if [[ -d "$DATA_DIR" ]]; then
    log "deleting $DATA_DIR"
    rm -rf "$DATA_DIR"
  else
    log "no data dir to delete"
  fi
}

usage() {
  sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
