#!/bin/sh
# Installs the services Surge runs beside (PgBouncer, HAProxy) from the distribution's packages when missing.
# The cluster proof (tests/cluster/, `surge loadtest --cluster`) calls it; so does a host being provisioned.
# Debian/Ubuntu only (apt-get); exit 2 when a service is missing and cannot be installed, so callers can say why.
set -eu
missing=""
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$missing pgbouncer"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
for wanted in "$@"; do  # optional extra packages, e.g. redis-server, iproute2
    command -v "$wanted" >/dev/null 2>&1 || [ -x "/usr/sbin/$wanted" ] || [ -x "/usr/bin/$wanted" ] || missing="$missing $wanted"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-services: missing$missing and no apt-get on this host" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-services: missing$missing; run as root to install them with apt-get" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# Packages' own services are not started here: Surge (or systemd units in deploy/systemd/) run them as configured.
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
if ! apt-get install -y --no-install-recommends $missing >/tmp/surge-install-services.log 2>&1; then
    apt-get update >>/tmp/surge-install-services.log 2>&1 || { echo "install-services: apt-get update failed (no network?); see /tmp/surge-install-services.log" >&2; exit 2; }
    apt-get install -y --no-install-recommends $missing >>/tmp/surge-install-services.log 2>&1 || { echo "install-services: apt-get install$missing failed; see /tmp/surge-install-services.log" >&2; exit 2; }
fi
echo "install-services: installed$missing"
