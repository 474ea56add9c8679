# shellcheck shell=bash
# Shared helpers for the local stack scripts. Sourced, never run.
#
# Every service the stack starts keeps its data, logs and pid files under
# STREAMSYNC_HOME, so `deploy/stack.sh down` can stop exactly what it started.

STREAMSYNC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export STREAMSYNC_ROOT

if [ -z "${STREAMSYNC_HOME:-}" ]; then
    # /root is not traversable by the postgres user, so root keeps state in /var/lib.
    if [ "$(id -u)" = 0 ]; then
        STREAMSYNC_HOME=/var/lib/streamsync
    else
        STREAMSYNC_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/streamsync"
    fi
fi
export STREAMSYNC_HOME
RUN_DIR="$STREAMSYNC_HOME/run"
LOG_DIR="$STREAMSYNC_HOME/log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

: "${COMPONENT:=stack}"

log() { printf '[%s] %s\n' "$COMPONENT" "$*" >&2; }

die() {
    printf '[%s] ERROR: %s\n' "$COMPONENT" "$*" >&2
    exit 1
}

# apt_install PKG... : install Debian packages that are not installed yet.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -q "${missing[@]}" >"$LOG_DIR/apt.log" 2>&1; then
        "${sudo[@]}" apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 || true
        "${sudo[@]}" apt-get install -y -q "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1 \
            || { tail -n 20 "$LOG_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $LOG_DIR/apt.log)"; }
    fi
}

# port_open HOST PORT : true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# port_holder PORT : describe which process listens on PORT (for error messages).
port_holder() {
    if command -v ss >/dev/null 2>&1; then
        ss -ltnpH "sport = :$1" 2>/dev/null | head -n 3
    else
        echo "unknown process (install iproute2 for details)"
    fi
}

# pid_alive PIDFILE : true when the pid file names a live process.
pid_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pid NAME PIDFILE [TIMEOUT] : TERM the process in PIDFILE, KILL after TIMEOUT seconds.
stop_pid() {
    local name=$1 pidfile=$2 timeout=${3:-30} pid i
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        log "$name not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop within ${timeout}s, killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# fail_with_log NAME LOGFILE MESSAGE : show the tail of a service log, then die.
fail_with_log() {
    log "last lines of $2:"
    tail -n 40 "$2" >&2 2>/dev/null || true
    die "$1: $3"
}
