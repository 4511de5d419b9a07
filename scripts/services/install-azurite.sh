#!/usr/bin/env bash
# Azurite, the Azure Storage emulator, for the Azure Blob store tests (tests/servers/azure.py).
# Installed with npm into .services/azurite; 3.35 is the newest release that runs on Node 20.
# Safe to re-run: does nothing when the pinned version is already there.
set -euo pipefail

AZURITE_VERSION="3.35.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.services/azurite"
BIN="$DEST/node_modules/.bin/azurite-blob"

installed_version() {
    node -p "require('$DEST/node_modules/azurite/package.json').version" 2>/dev/null || true
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$AZURITE_VERSION" ]; then
    echo "azurite $AZURITE_VERSION already installed"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "npm not found: install Node.js >= 18 and npm, then re-run $0" >&2
        exit 1
    fi
fi

mkdir -p "$DEST"
cd "$DEST"
[ -f package.json ] || echo '{"name": "objstore-wfp-azurite", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error --save-exact "azurite@$AZURITE_VERSION"
echo "azurite $(installed_version) installed in $DEST"
