#!/usr/bin/env bash
# Run on a machine with an NVIDIA GPU (the device tool): the real Ansible path of apply
# and verify against real hardware. ansible-core is installed offline from wheels carried
# along in bench/_gpu_wheels (`pip download --only-binary :all: --python-version 3.12 ...
# ansible-core`; not committed). Runs, with connection=local:
#   1. roles nvidia_driver + gpu_checks with expectations read off the card -> must pass,
#      and nvidia_driver must say "no change: driver ... already installed";
#   2. gpu_checks with wrong expectations -> must fail with readable messages.
# It changes nothing on the machine (no power caps, no packages). Results go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu-ansible-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
cd "$(dirname "$0")/.."
date -u; python3 --version; nvidia-smi -L
if python3 -m venv --system-site-packages /tmp/rigctl-av 2>/dev/null; then
  /tmp/rigctl-av/bin/pip install -q --no-index --find-links bench/_gpu_wheels ansible-core || exit 1
  /tmp/rigctl-av/bin/python -c "import pynvml" 2>/dev/null || /tmp/rigctl-av/bin/pip install -q --no-index --find-links bench/_gpu_wheels nvidia-ml-py
  export PATH=/tmp/rigctl-av/bin:$PATH
else
  python3 -m pip install -q --no-index --find-links bench/_gpu_wheels --target /tmp/rigctl-ap ansible-core || exit 1
  export PYTHONPATH=/tmp/rigctl-ap PATH=/tmp/rigctl-ap/bin:$PATH
fi
ansible-playbook --version | head -2
export ANSIBLE_ROLES_PATH=$PWD/playbooks/roles ANSIBLE_LOCALHOST_WARNING=False \
       ANSIBLE_INVENTORY_UNPARSED_WARNING=False ANSIBLE_NOCOLOR=1

name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
count=$(nvidia-smi -L | wc -l)
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
branch=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1 | cut -d. -f1)
pl=$(nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits | head -1 | cut -d. -f1)
mem_gib=$(( mem_mib / 1024 - 1 ))

play() {  # $1 file, $2 expected yaml (flow), $3 result file
  cat > "$1" <<YAML
- name: rigctl GPU roles on real hardware
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    rigctl_gpu_required: true
    rigctl_gpu_fail_on_mismatch: true
    rigctl_gpu_module_python: "{{ ansible_playbook_python }}"
    rigctl_driver_branch: "$branch"
    rigctl_gpu_expected: $2
  roles:
    - nvidia_driver
    - gpu_checks
  post_tasks:
    - name: Keep the module result
      ansible.builtin.copy:
        content: "{{ rigctl_gpu_result | to_nice_json }}"
        dest: "$3"
        mode: "0644"
YAML
}

play /tmp/match.yml "{gpu_count: $count, gpus: [{nvml_names: ['$name'], memory_gib_min: $mem_gib, pcie_width_min: 16, pcie_gen_min: 5, power_limit_w: $pl}]}" "$OUT/module-result-match.json"
echo "=== 1. expectations read off the card (must pass)"
ansible-playbook -i localhost, /tmp/match.yml; echo "rc=$?"

play /tmp/mismatch.yml "{gpu_count: $((count + 1)), gpus: [{nvml_names: ['NVIDIA GeForce RTX 3090'], memory_gib_min: 200, pcie_width_min: 16, pcie_gen_min: 5, power_limit_w: 450}], nvlink_pairs: [[0, 1]]}" "$OUT/module-result-mismatch.json"
echo "=== 2. wrong expectations (must fail, readably)"
ansible-playbook -i localhost, /tmp/mismatch.yml; echo "rc=$?"
