#!/usr/bin/env bash
# PostgreSQL from the distribution's packages, for tests/examples/test_postgres_backend.py (the
# tests run initdb and postgres themselves, as the unprivileged "postgres" user, on 127.0.0.1).
# Safe to re-run: does nothing when a versioned server (/usr/lib/postgresql/*/bin/postgres) exists.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && getent passwd postgres >/dev/null; then
    echo "PostgreSQL already installed: $(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
# policy-rc.d 101 keeps dpkg from starting the packaged cluster (there may be no init system).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# Refresh the package lists only when they do not know the package or are too stale to install it.
if ! apt-cache show postgresql >/dev/null 2>&1 || ! apt_install postgresql; then
    $SUDO apt-get update -qq
    apt_install postgresql
fi
echo "PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)"
