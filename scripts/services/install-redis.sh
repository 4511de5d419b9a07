#!/usr/bin/env bash
# redis-server from the distribution's packages, for tests/examples/test_redis_backend.py (the tests
# start their own server on 127.0.0.1; the packaged service is kept from starting, so it holds no port).
# Safe to re-run: does nothing when redis-server is already installed.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "$(redis-server --version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
# policy-rc.d 101 keeps dpkg from starting the packaged service (there may be no init system).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# Refresh the package lists only when they do not know the package or are too stale to install it.
if ! apt-cache show redis-server >/dev/null 2>&1 || ! apt_install redis-server; then
    $SUDO apt-get update -qq
    apt_install redis-server
fi
echo "$(redis-server --version)"
