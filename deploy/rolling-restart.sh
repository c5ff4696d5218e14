#!/bin/sh
# Restart every engine node, one at a time, without failing a request: for each node, HAProxy stops sending it new
# requests (drain), the node gets a graceful SIGTERM through systemd (finishing what it has in flight), starts again,
# and takes traffic once /readyz passes. Usage: rolling-restart.sh engine1=10.0.1.11 engine2=10.0.1.12 …
# (HAProxy server name = host reached over ssh). HAPROXY_SOCKET: its runtime API (deploy/haproxy.cfg).
set -eu
socket="${HAPROXY_SOCKET:-/run/haproxy/admin.sock}"
drain_s="${DRAIN_S:-5}"
haproxy_command() { printf '%s\n' "$1" | socat stdio "unix-connect:$socket"; }
for pair in "$@"; do
    name="${pair%%=*}"; host="${pair#*=}"
    echo "rolling-restart: $name ($host): draining"
    haproxy_command "set server engines/$name state drain"
    sleep "$drain_s"  # requests already sent to it finish; new ones go elsewhere
    # systemd sends SIGTERM and waits (TimeoutStopSec); start returns once /readyz is 200 (ExecStartPost).
    ssh "$host" sudo systemctl restart surge
    haproxy_command "set server engines/$name state ready"
    echo "rolling-restart: $name ($host): back"
done
