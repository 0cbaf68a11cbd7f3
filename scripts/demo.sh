#!/usr/bin/env bash
# The main job on a built-in example: validate and plan example rigs; then, where this
# machine allows it (root + systemd-nspawn), bring up two lab hosts, apply the lab rig
# over SSH with Ansible, ask the deployed llama-server for a completion, and tear down.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
RIGCTL=.venv/bin/rigctl
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "validate: a guide build done right"
$RIGCTL validate examples/dual-3090-nvlink.yaml
step "validate: the same guide's 405B claim (expected to fail)"
$RIGCTL validate examples/pitfalls/405b-on-dual-a100.yaml || true
step "plan: placement, flags and speed"
$RIGCTL plan examples/dual-3090-nvlink.yaml

step "lab: apply examples/lab-cpu-rpc.yaml to two local hosts"
if ! $RIGCTL lab status >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
  echo "skipping the lab part: it needs root and systemd-nspawn (validate and plan above ran)"
  exit 0
fi
if ! $RIGCTL lab up 2; then
  echo "skipping the lab part: the lab cannot run on this machine (validate and plan above ran)"
  exit 0
fi
trap '$RIGCTL lab down >/dev/null 2>&1 || true' EXIT
echo "llama.cpp CPU build (built from the llama-cpp-python sdist once, ~8 min on 2 cores; then cached):"
export RIGCTL_ARTIFACTS_DIR=$(.venv/bin/python -m provisioner.lab.llamacpp | tail -n 1)
echo "  $RIGCTL_ARTIFACTS_DIR"
MODEL=/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf   # model_file of examples/lab-cpu-rpc.yaml
[ -f "$MODEL" ] || { mkdir -p "$(dirname "$MODEL")"; .venv/bin/python -m provisioner.testmodels "$MODEL"; }
export RIGCTL_LAB_API_KEY=${RIGCTL_LAB_API_KEY:-demo-$(od -An -N8 -tx1 /dev/urandom | tr -d " \n")}
$RIGCTL validate examples/lab-cpu-rpc.yaml
$RIGCTL apply examples/lab-cpu-rpc.yaml -i inventories/lab --yes
step "a real completion from llama-server on h1 (using the RPC server on h2)"
curl -sS --max-time 60 http://10.213.0.11:8080/v1/chat/completions \
  -H "Authorization: Bearer $RIGCTL_LAB_API_KEY" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
echo
step "verify"
$RIGCTL verify examples/lab-cpu-rpc.yaml -i inventories/lab || true
step "lab down"
