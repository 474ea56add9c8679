#!/usr/bin/env bash
# Chromium, from Debian's packages, for the test that looks at the health page in a real browser.
#   deploy/browser.sh      install it if missing and check that it starts headless
# Without it the browser test fails (it never skips): run this, or `deploy/stack.sh up`, which does.
set -euo pipefail
COMPONENT=browser
# shellcheck source=deploy/lib/common.sh
. "$(dirname "$0")/lib/common.sh"

apt_install chromium
command -v chromium >/dev/null || die "Debian's chromium is installed but not on PATH (expected /usr/bin/chromium)"
# Root has no user namespace sandbox to offer; the test runs it the same way.
if ! chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>"$LOG_DIR/chromium.log"; then
    fail_with_log chromium "$LOG_DIR/chromium.log" "chromium does not start headless"
fi
log "$(chromium --version 2>/dev/null)"
