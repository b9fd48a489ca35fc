#!/usr/bin/env bash
# GPU check for the sparsity core, run through the device tool from the repo root:
# mask tests on the GPU, then the overhead benchmark (MLP and ResNet-18) with
# XLA's default flags and with conditionals/loops in command buffers (CUDA
# graphs), which keeps lax.cond's predicate on the device. JSON lands in $OUT.
set -uo pipefail
OUT=${OUT:-device_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, optax, flax; print('jax', jax.__version__, 'optax', optax.__version__, 'flax', flax.__version__, jax.devices())"
timeout 100 python3 -m pytest -q -p no:cacheprovider -x tests/sparsity/test_masks.py 2>&1 | tail -2
CMDBUF=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE
for run in default cmdbuf; do
  flags=""; [ "$run" = cmdbuf ] && flags=$CMDBUF
  XLA_FLAGS=$flags timeout 200 python3 -m benchmarks.sparsity_overhead --workloads mlp,resnet18 \
    --json-out "$OUT/sparsity_overhead_gpu_$run.json" > "$OUT/$run.txt" 2> "$OUT/$run.err"
  echo "$run exit $?"; tail -2 "$OUT/$run.err"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
  d = json.load(open(f))
  print(f.name, d["device"]["device_kind"], d["device"]["xla_flags"], d.get("leaf_1024x1024"))
  for name, w in d["workloads"].items():
    print(" ", name, w["median_step_ms"], w["ratios"])
PY
