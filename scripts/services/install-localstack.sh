#!/usr/bin/env bash
# LocalStack (S3 only) on the host, without Docker, for the S3 store tests (tests/servers/s3.py).
# LocalStack's runtime needs Python 3.13: this creates .services/localstack-venv from the first
# python3.13 found on PATH or under pyenv. Safe to re-run: does nothing when the pinned version
# is already installed.
set -euo pipefail

LOCALSTACK_VERSION="${LOCALSTACK_VERSION:-2026.3.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.services/localstack-venv"

installed_version() {
    "$DEST/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))' 2>/dev/null || true
}

if [ -x "$DEST/bin/python" ] && [ "$(installed_version)" = "$LOCALSTACK_VERSION" ]; then
    echo "localstack-core $LOCALSTACK_VERSION already installed"
    exit 0
fi

find_python313() {
    local candidate
    for candidate in "$(command -v python3.13 2>/dev/null || true)" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13; do
        # pyenv's shim exists on PATH even when 3.13 is not the selected version: run it to be sure.
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PY313="$(find_python313)"; then
    echo "python3.13 not found (PATH, pyenv): LocalStack's runtime needs Python 3.13" >&2
    exit 1
fi

rm -rf "$DEST"
"$PY313" -m venv "$DEST"
"$DEST/bin/pip" install -q --upgrade pip
# The pins keep versions that LocalStack's runtime imports without errors on the host.
"$DEST/bin/pip" install -q "localstack-core[runtime]==$LOCALSTACK_VERSION" "cbor2<6" \
    "pyopenssl>=25,<26" "cryptography>=45.0.7,<47" service-identity
echo "localstack-core $(installed_version) installed in $DEST"
