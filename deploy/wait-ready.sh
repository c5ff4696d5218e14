#!/bin/sh
# Wait until this host's engine answers /readyz with 200 (its database reachable); exit 1 after $1 seconds.
# Used by systemd/surge.service (ExecStartPost) and rolling-restart.sh.
set -eu
timeout_s="${1:-60}"
url="${SURGE_READY_URL:-http://127.0.0.1:${SURGE_PORT:-8000}/readyz}"
deadline=$(( $(date +%s) + timeout_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('$url', timeout=2).status != 200)" 2>/dev/null; then
        exit 0
    fi
    sleep 0.5
done
echo "wait-ready: $url not ready after ${timeout_s} s" >&2
exit 1
