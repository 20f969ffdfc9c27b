#!/usr/bin/env bash
# Run a command in a network namespace where only loopback exists, so the
# real agents (and anything they start) can reach nothing but 127.0.0.1:
#
#   tests/peers/loopback-only.sh CMD [ARGS...]
#
# Uses `unshare --net` (root, or user namespaces) and brings `lo` up. Where
# no namespace can be made it says why on stderr and runs CMD as it is: the
# agents are still pointed at fake servers on 127.0.0.1 and run with
# telemetry and auto-update off, but nothing stops an attempt to go out.
set -euo pipefail
if command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
   && unshare --net true 2>/dev/null; then
  exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "loopback-only.sh: cannot create a network namespace here (unshare --net); running without one" >&2
exec "$@"
