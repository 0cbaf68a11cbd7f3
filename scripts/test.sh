#!/usr/bin/env bash
# Set up a virtualenv with rigctl and its test tools, then run the whole test suite.
# Lab integration tests (systemd-nspawn hosts, real ansible-playbook over SSH, real
# llama.cpp) run when this is root on Linux; elsewhere they skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# community.docker (docker_compose_v2, for container rigs) comes out of the `ansible` wheel,
# without the ~100 other collections it carries (seconds instead of a minute of installing)
.venv/bin/python scripts/ansible_collections_install.py
# nft and docker compose v2 parse rendered files in the fuzz and injection tests (root + apt)
bash scripts/consumer_tools.sh || echo "consumer tools unavailable; the tests that need them skip" >&2
# headless Chromium for the plan page test (root + apt; skipped elsewhere)
bash scripts/browser_tools.sh || echo "chromium unavailable; the browser tests skip" >&2
exec .venv/bin/python -m pytest -q -ra "$@"
