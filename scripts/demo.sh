#!/usr/bin/env bash
# The main job on a built-in example: validate and plan example rigs; then, where this
# machine allows it (root + systemd-nspawn), bring up two lab hosts, apply the lab rig
# over SSH with Ansible, ask the deployed llama-server for a completion, and tear down.
#
# What it installs: a .venv here with rigctl and its Python dependencies. The lab part (root only)
# installs on this machine, through apt, what provisioner/lab/lab.sh needs: systemd-container,
# mmdebstrap, apt-cacher-ng, iproute2, openssh-client; the llama.cpp build needs cmake, a C++
# compiler and make already installed (.ci/run installs python3-venv, cmake and g++). The lab
# hosts themselves are a Debian bookworm rootfs made by mmdebstrap (cached in /var/tmp).
# First run: the llama.cpp CPU build takes 15-40 min cold on a busy 2-core machine (16 and 35 min
# measured), seconds once cached; the bookworm rootfs a few minutes, once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
RIGCTL=.venv/bin/rigctl
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "what this demo installs"
echo "  .venv/ here: rigctl and its Python packages (pip)"
echo "  lab part, as root, on this machine (apt): systemd-container mmdebstrap apt-cacher-ng iproute2 openssh-client"
echo "  needed already for the llama.cpp build: cmake, a C++ compiler (g++), make"

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
echo "llama.cpp CPU build (from the llama-cpp-python sdist; first run 15-40 min on a busy 2-core machine, then cached: seconds):"
export RIGCTL_ARTIFACTS_DIR=$(.venv/bin/python -m provisioner.lab.llamacpp | tail -n 1)
echo "  $RIGCTL_ARTIFACTS_DIR"
MODEL=/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf   # model_file of examples/lab-cpu-rpc.yaml
[ -f "$MODEL" ] || { mkdir -p "$(dirname "$MODEL")"; .venv/bin/python -m provisioner.testmodels "$MODEL"; }
export RIGCTL_LAB_API_KEY=${RIGCTL_LAB_API_KEY:-demo-$(od -An -N8 -tx1 /dev/urandom | tr -d " \n")}
$RIGCTL validate examples/lab-cpu-rpc.yaml
$RIGCTL apply examples/lab-cpu-rpc.yaml -i inventories/lab --yes
step "a real completion from llama-server on h1 (using the RPC server on h2)"
echo "NOTE: the lab model has RANDOM WEIGHTS (a 2-layer test GGUF from provisioner.testmodels): the text"
echo "below is random tokens. It shows that the deployed server answers over HTTP with its API key, not"
echo "what a real model would say."
curl -sS --max-time 60 http://10.213.0.11:8080/v1/chat/completions \
  -H "Authorization: Bearer $RIGCTL_LAB_API_KEY" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'
echo
step "verify"
$RIGCTL verify examples/lab-cpu-rpc.yaml -i inventories/lab || true
step "bench (CPU speeds of a random-weight model: expect a warning that they are outside the plan's range)"
$RIGCTL bench examples/lab-cpu-rpc.yaml -i inventories/lab || true
step "lab down"
