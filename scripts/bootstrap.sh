#!/usr/bin/env bash
# The Python toolchain: uv (from PyPI) and the locked virtualenv in .venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Trust the machine's certificate store (a proxy with its own CA is common in fleets' networks).
export UV_SYSTEM_CERTS=1
if [ -z "${SSL_CERT_FILE:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
fi

if ! python3 -m uv --version >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq python3-pip python3-venv >/dev/null
    fi
    python3 -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uv
fi
python3 -m uv sync --frozen --quiet
echo "python: .venv ready ($(.venv/bin/python --version), $(python3 -m uv --version))"
