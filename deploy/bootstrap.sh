#!/usr/bin/env bash
# The project's Python environment: .venv with streamsync and its producer client (client/), both
# editable, and the pinned dependency set.
#   deploy/bootstrap.sh
# Re-installs only when pyproject.toml, client/pyproject.toml or constraints.txt changed.
set -euo pipefail
COMPONENT=venv
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

VENV="$STREAMSYNC_ROOT/.venv"
PYTHON="${STREAMSYNC_PYTHON:-python3}"

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: streamsync needs Python >= 3.11"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PYTHON" --version) is too old: streamsync needs Python >= 3.11 (set STREAMSYNC_PYTHON)"

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; "$PYTHON" -m venv "$VENV"; }
fi

stamp="$VENV/.streamsync-installed"
want=$(cat "$STREAMSYNC_ROOT/pyproject.toml" "$STREAMSYNC_ROOT/client/pyproject.toml" "$STREAMSYNC_ROOT/constraints.txt" \
    | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing streamsync, its client and their pinned dependencies (constraints.txt)"
    "$VENV/bin/python" -m pip install -q --upgrade pip >"$LOG_DIR/pip.log" 2>&1 || true
    # The distribution was called `streamsync` before: two installs must not both claim the package.
    if "$VENV/bin/python" -m pip show -q streamsync >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall -y -q streamsync >>"$LOG_DIR/pip.log" 2>&1
    fi
    "$VENV/bin/python" -m pip install -q -c "$STREAMSYNC_ROOT/constraints.txt" \
        -e "$STREAMSYNC_ROOT/client" -e "$STREAMSYNC_ROOT[test]" \
        >>"$LOG_DIR/pip.log" 2>&1 || { tail -n 30 "$LOG_DIR/pip.log" >&2; die "pip install failed (log: $LOG_DIR/pip.log)"; }
    echo "$want" >"$stamp"
fi
