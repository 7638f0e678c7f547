#!/usr/bin/env bash
# Quickstart 2: install, then run the test suite (real moto S3 server, real Prefect).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
