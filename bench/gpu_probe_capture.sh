#!/usr/bin/env bash
# Record real GPU facts for tests/fixtures/probe/ (run on a machine with an
# NVIDIA GPU; on a host without one it reports that and exits 3).
#
#   OUT=/some/dir bash bench/gpu_probe_capture.sh
#
# Writes into $OUT (default ./_probe_out):
#   nvidia-smi.txt      nvidia-smi, -q (first 200 lines), topo -m, nvlink -s, -q -d PCIE, CSV query
#   probe.json          provisioner.probe.core.collect()
#   probe_text.txt      `rigctl probe` text output and the yaml fragment
#   compare.json        compare() against a matching and a mismatched expectation
#   capture.log         what this script did, with timings
# Only the standard library and pynvml (nvidia-ml-py) are needed. If pynvml is
# missing, a copy placed in bench/_vendor_pynvml/ is used.
set -u
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/_probe_out}"
mkdir -p "$OUT"
LOG="$OUT/capture.log"
: >"$LOG"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

PY=python3
command -v "$PY" >/dev/null || PY=python
log "python: $(command -v $PY) $($PY -V 2>&1); uname: $(uname -srm)"

SMI="$OUT/nvidia-smi.txt"
: >"$SMI"
if command -v nvidia-smi >/dev/null 2>&1; then
  for args in "" "-q" "topo -m" "nvlink -s" "nvlink -c" "-q -d PCIE" \
      "--query-gpu=index,name,pci.bus_id,memory.total,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,power.limit,power.default_limit,power.min_limit,power.max_limit,persistence_mode,driver_version --format=csv"; do
    echo "===== \$ nvidia-smi $args" >>"$SMI"
    if [ "$args" = "-q" ]; then
      timeout 60 nvidia-smi -q 2>&1 | head -200 >>"$SMI"
    else
      # shellcheck disable=SC2086
      timeout 60 nvidia-smi $args >>"$SMI" 2>&1; echo "(exit $?)" >>"$SMI"
    fi
    echo >>"$SMI"
  done
  log "nvidia-smi outputs saved"
else
  echo "nvidia-smi: not found" >>"$SMI"
  log "nvidia-smi not found"
fi
for tool in lspci dmidecode; do
  if command -v $tool >/dev/null 2>&1; then log "$tool: present"; else log "$tool: absent"; fi
done

if ! $PY -c "import pynvml" >/dev/null 2>&1; then
  if [ -f bench/_vendor_pynvml/pynvml.py ]; then
    export PYTHONPATH="$PWD/bench/_vendor_pynvml${PYTHONPATH:+:$PYTHONPATH}"
    log "pynvml missing: using bench/_vendor_pynvml/pynvml.py"
  else
    log "pynvml missing and no vendored copy"
  fi
else
  log "pynvml present: $($PY -c 'import importlib.metadata as m; print(m.version("nvidia-ml-py"))' 2>&1)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

$PY - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, math, sys, time, argparse, io, contextlib
out = sys.argv[1]
from provisioner.probe.core import collect, compare, ProbeUnavailable
from provisioner.probe import spec_fragment
t0 = time.time()
try:
    facts = collect()
except ProbeUnavailable as exc:
    print("ProbeUnavailable:", exc.reason)
    sys.exit(3)
print("collect() took %.2f s" % (time.time() - t0))
with open(out + "/probe.json", "w") as f:
    json.dump(facts, f, indent=2, sort_keys=True)
print("errors:", json.dumps(facts["errors"], indent=1))

# An expectation built from what the card reports (must give no problems) ...
match = {"gpu_count": len(facts["gpus"]), "gpus": []}
for g in facts["gpus"]:
    want = {"name_contains": g["name"].split()[-1] if g.get("name") else None}
    if g.get("memory_total_mib"):
        want["memory_gib_min"] = math.floor(g["memory_total_mib"] / 1024.0)
    p = g.get("pcie") or {}
    if p.get("width_current"): want["pcie_width_min"] = p["width_current"]
    if p.get("gen_max"): want["pcie_gen_min"] = p["gen_max"]
    if (g.get("power") or {}).get("limit_w") is not None:
        want["power_limit_w"] = g["power"]["limit_w"]
    match["gpus"].append(want)
match["nvlink_pairs"] = [[p["a"], p["b"]] for p in facts["p2p"] if p.get("nvlink")]
# ... and one that is wrong on every point.
g0 = facts["gpus"][0]
mismatch = {
    "gpu_count": len(facts["gpus"]) + 1,
    "gpus": [{"name_contains": "RTX 4090", "memory_gib_min": 1000,
              "pcie_width_min": 32, "pcie_gen_min": ((g0.get("pcie") or {}).get("gen_max") or 4) + 1,
              "power_limit_w": 123}],
    "nvlink_pairs": [[0, 1]],
}
res = {"match": {"expected": match, "problems": compare(facts, match)},
       "mismatch": {"expected": mismatch, "problems": compare(facts, mismatch)}}
with open(out + "/compare.json", "w") as f:
    json.dump(res, f, indent=2)
print("match problems:", len(res["match"]["problems"]))
for p in res["mismatch"]["problems"]:
    print("mismatch:", p["message"])

buf = io.StringIO()
try:
    from provisioner.commands import probe as cmd
    with contextlib.redirect_stdout(buf):
        rc_text = cmd.run(argparse.Namespace(format="text"))
    buf.write("(exit %s)\n\n" % rc_text)
except Exception as exc:
    buf.write("CLI text output failed: %r\n\n" % (exc,))
buf.write(spec_fragment(facts))
with open(out + "/probe_text.txt", "w") as f:
    f.write(buf.getvalue())
print(buf.getvalue())
EOF
rc=${PIPESTATUS[0]}
log "probe python exit $rc"

if command -v ansible-playbook >/dev/null 2>&1; then
  log "ansible-playbook present: $(ansible-playbook --version 2>/dev/null | sed -n 1p) (not run: fixture capture only)"
else
  log "ansible-playbook: absent (module path not exercised here)"
fi
exit "$rc"
