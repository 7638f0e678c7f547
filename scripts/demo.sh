#!/usr/bin/env bash
# Quickstart 1: install, then run the whole pipeline on a local S3 endpoint with synthetic frames (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
exec .venv/bin/pokevq demo "$@"
