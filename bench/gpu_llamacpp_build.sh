#!/usr/bin/env bash
# Issue 12 items 1 and 6, on a machine with an NVIDIA GPU and the CUDA toolkit (none in CI):
# build llama.cpp exactly as the llamacpp_build role does (the flags come from
# provisioner/plan/engines.py, for this GPU's compute capability), check that the binaries need
# no CUDA runtime library a driver-only host lacks, run the llama-server command `rigctl plan`
# renders for a one-GPU spec of this card, and run llama-bench. PREPARED, NOT RUN YET.
#
#   OUT=/some/dir [SDIST=llama_cpp_python-0.3.36.tar.gz | LLAMA_SRC=.../vendor/llama.cpp] \
#   [MODEL=some.gguf] [JOBS=16] bash bench/gpu_llamacpp_build.sh
#
# SDIST defaults to the lab cache copy, else `pip download` (needs PyPI). Without MODEL a small
# random-weight GGUF from provisioner.testmodels is used and the record says so (a model with a
# real model's shape is item 6's job). Writes into $OUT (default ./_gpu_llamacpp_out):
#   run.log              what ran, with timings       gpu.txt      nvidia-smi name, cc, driver
#   cmake_args.txt       the plan's flags as used     build.log    cmake configure + build
#   needed.txt           readelf -d NEEDED of each binary (must not list libcudart/libcublas/libnccl)
#   spec.yaml, plan.json the one-GPU spec and its plan   server.log   llama-server's output
#   completion.json      one /completion answer       bench.json   llama-bench -o json
# Exit: 0 all done, 3 no GPU or no nvcc, 1 a step failed (see run.log).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT="${OUT:-$ROOT/_gpu_llamacpp_out}"
mkdir -p "$OUT"
LOG="$OUT/run.log"
: >"$LOG"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
die() { log "FAILED: $*"; exit 1; }
PY="${PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

command -v nvidia-smi >/dev/null 2>&1 || { log "no nvidia-smi: not a GPU machine"; exit 3; }
NVCC="$(command -v nvcc || ls -d /usr/local/cuda*/bin/nvcc 2>/dev/null | sort -V | tail -1)"
[ -n "$NVCC" ] && [ -x "$NVCC" ] || { log "no nvcc (install cuda-nvcc-12-9 and libcublas-dev-12-9)"; exit 3; }
TOOLKIT="$(dirname "$(dirname "$(readlink -f "$NVCC")")")"
nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -1)"
CC="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0 | head -1)"
log "GPU 0: $NAME, compute capability $CC; nvcc $("$NVCC" --version | tail -1); toolkit $TOOLKIT"

# 1. the source: the same sdist the lab build and the role use
if [ -z "${LLAMA_SRC:-}" ]; then
  SDIST="${SDIST:-/var/tmp/rigctl-lab-cache/downloads/llama_cpp_python-0.3.36.tar.gz}"
  if [ ! -f "$SDIST" ]; then
    "$PY" -m pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$OUT/dl" >>"$LOG" 2>&1 \
      || die "no sdist and pip download failed"
    SDIST="$(ls "$OUT"/dl/llama_cpp_python-*.tar.gz | head -1)"
  fi
  mkdir -p "$OUT/src" && tar -xzf "$SDIST" -C "$OUT/src" --wildcards '*/vendor/llama.cpp/*' || die "unpack $SDIST"
  LLAMA_SRC="$(ls -d "$OUT"/src/*/vendor/llama.cpp | head -1)"
fi
log "source: $LLAMA_SRC"

# 2. the plan's flags for this card; the toolkit paths follow the local install (recorded)
"$PY" - "$CC" "$TOOLKIT" >"$OUT/cmake_args.txt" <<'EOF' || die "engines.cmake_args"
import sys
from provisioner.plan import engines
cc, toolkit = sys.argv[1], sys.argv[2]
for a in engines.cmake_args("cuda", [engines.cuda_arch(cc)]):
    if a.startswith("-DCUDAToolkit_ROOT="):
        a = f"-DCUDAToolkit_ROOT={toolkit}"
    elif a.startswith("-DCMAKE_CUDA_COMPILER="):
        a = f"-DCMAKE_CUDA_COMPILER={toolkit}/bin/nvcc"
    print(a)
print("# key", engines.build_key("cuda", [engines.cuda_arch(cc)]), "(the role's build uses CUDA",
      engines.CUDA_TOOLKIT.replace("-", "."), "at /usr/local/cuda-" + engines.CUDA_TOOLKIT.replace("-", ".") + ")",
      file=sys.stderr)
EOF
mapfile -t ARGS < "$OUT/cmake_args.txt"
log "cmake args: ${ARGS[*]}"
BUILD="$OUT/build"
t0=$(date +%s)
cmake -S "$LLAMA_SRC" -B "$BUILD" "${ARGS[@]}" >"$OUT/build.log" 2>&1 || die "configure (build.log)"
cmake --build "$BUILD" --config Release -j "${JOBS:-$(nproc)}" \
  --target llama-server ggml-rpc-server llama-bench >>"$OUT/build.log" 2>&1 || die "build (build.log)"
log "built in $(( $(date +%s) - t0 )) s; sizes: $(du -h "$BUILD"/bin/llama-server "$BUILD"/bin/ggml-rpc-server | tr '\n' ' ')"

# 3. linkage: only the driver's libcuda.so.1 may remain of CUDA
: >"$OUT/needed.txt"
for b in llama-server ggml-rpc-server llama-bench; do
  echo "== $b" >>"$OUT/needed.txt"
  readelf -d "$BUILD/bin/$b" | grep NEEDED >>"$OUT/needed.txt"
done
if grep -Eq 'libcudart|libcublas|libnccl' "$OUT/needed.txt"; then die "a binary needs CUDA runtime libraries (needed.txt)"; fi
log "linkage ok: $(grep -c NEEDED "$OUT/needed.txt") NEEDED entries, none of libcudart/libcublas/libnccl"

# 4. the model
if [ -z "${MODEL:-}" ]; then
  MODEL="$OUT/stand-in.gguf"
  "$PY" -m provisioner.testmodels "$MODEL" --layers 8 --dim 512 >>"$LOG" 2>&1 || die "testmodels"
  log "MODEL not given: a random-weight stand-in $(du -h "$MODEL" | cut -f1) (not a real model's shape)"
fi

# 5. the llama-server command rigctl plans for one GPU of this card
"$PY" - "$NAME" "$MODEL" >"$OUT/spec.yaml" <<'EOF' || die "no catalog entry for this GPU"
import sys
from provisioner.spec.catalog import builtin
name, model = sys.argv[1], sys.argv[2]
entry = next((e for e in builtin().gpus if name in (e.nvml_names or []) or e.name == name), None)
if entry is None:
    sys.exit(f"no catalog GPU lists the NVML name {name!r}")
print(f"""version: 1
name: gpu-bench
nodes:
  - name: gpu
    os: ubuntu-24.04
    gpus: [{{id: gpu0, model: {entry.id}}}]
serve:
  - name: bench
    model: llama-3.1-8b
    format: Q4_K_M
    stack: llamacpp
    model_file: {model}
    context_tokens: 4096
    placement: [{{node: gpu}}]
""")
EOF
"$ROOT/.venv/bin/rigctl" plan "$OUT/spec.yaml" -f json >"$OUT/plan.json" 2>>"$LOG" || "$PY" -m provisioner plan "$OUT/spec.yaml" -f json >"$OUT/plan.json" 2>>"$LOG" || die "rigctl plan"
mapfile -t SRV < <("$PY" - "$OUT/plan.json" "$BUILD/bin" "$MODEL" <<'EOF'
import json, sys
plan, bindir, model = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
svc = plan["deployments"][0]["services"][0]
print(svc["engine"]["label"], file=sys.stderr)
argv = [bindir + "/" + svc["argv"][0]] + svc["argv"][1:]
print("\n".join(model if a == svc["model_path"] else a for a in argv))
EOF
)
log "planned command: ${SRV[*]}"
CUDA_VISIBLE_DEVICES=0 "${SRV[@]}" >"$OUT/server.log" 2>&1 &
PID=$!
PORT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['deployments'][0]['services'][0]['port'])" "$OUT/plan.json")
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || break
  sleep 1
done
curl -fs "http://127.0.0.1:$PORT/completion" -d '{"prompt": "Hello", "n_predict": 16}' >"$OUT/completion.json" 2>>"$LOG" \
  && log "llama-server answered /completion" || log "FAILED: no /completion answer (server.log)"
kill $PID 2>/dev/null; wait $PID 2>/dev/null
grep -Ei 'CUDA0|model buffer|KV buffer|compute buffer|offloaded' "$OUT/server.log" | tee -a "$LOG"

# 6. llama-bench on the same model
"$BUILD/bin/llama-bench" -m "$MODEL" -ngl 999 -p 512 -n 128 -o json >"$OUT/bench.json" 2>>"$LOG" \
  || die "llama-bench"
log "llama-bench done: $OUT/bench.json"
log "all done"
