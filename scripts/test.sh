#!/usr/bin/env bash
# Quickstart 2: install, then run the test suite (real moto S3 server, real Prefect).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The browser test drives Debian's chromium headless (Playwright never downloads a browser here).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing chromium for the browser test..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "The browser test needs /usr/bin/chromium: sudo apt-get install chromium" >&2
    fi
fi
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# Three test processes (pytest-xdist), each running whole files: much of the suite waits on servers,
# workers and subprocesses, so a third process keeps 2 cores busy. Pass -n 0 for one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile "$@"
