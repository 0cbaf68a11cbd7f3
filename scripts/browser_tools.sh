#!/usr/bin/env bash
# The headless browser the plan-page test (tests/test_plan_html.py) loads `rigctl plan
# --format html` in: Debian's chromium package. Root + apt only; elsewhere that test
# skips and says so. Idempotent: an installed chromium costs nothing.
set -euo pipefail
command -v chromium >/dev/null && exit 0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "browser tools: not root with apt; skipping" >&2; exit 0; }
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
chromium --version
