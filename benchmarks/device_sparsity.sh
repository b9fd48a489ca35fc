#!/usr/bin/env bash
# GPU check for the sparsity core, run through the device tool from the repo root:
# optional mask tests on the GPU (WITH_TESTS=1), then the overhead benchmark
# (MLP and ResNet-18). Extra XLA flags can be given in XLA_FLAGS. JSON lands in $OUT.
set -uo pipefail
OUT=${OUT:-device_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, optax, flax; print('jax', jax.__version__, 'optax', optax.__version__, 'flax', flax.__version__, jax.devices())"
if [ "${WITH_TESTS:-0}" = 1 ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider -x tests/sparsity/test_masks.py \
    tests/sparsity/test_updater.py tests/sparsity/test_algorithms.py 2>&1 | tail -2
fi
timeout 240 python3 -m benchmarks.sparsity_overhead --workloads mlp,resnet18 \
  --json-out "$OUT/sparsity_overhead_gpu.json" > "$OUT/stdout.txt" 2> "$OUT/stderr.txt"
echo "benchmark exit $?"
python3 - "$OUT/sparsity_overhead_gpu.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["device"], d.get("leaf_1024x1024"))
for name, w in d["workloads"].items():
  print(name, w["median_step_ms"], w["ratios"], w["no_recompilation"])
PY
