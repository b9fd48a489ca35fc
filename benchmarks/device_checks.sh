#!/usr/bin/env bash
# Every GPU figure the open issues owe, in one device-tool call from the repo root:
#   bash benchmarks/device_checks.sh [benchmark ...]
# Default order (most owed first): train_throughput flatness_cost sparsity_overhead
# safe_cost. Each runs with its accelerator defaults under a timeout, and a benchmark is
# skipped when less than MIN_S seconds are left of BUDGET_S (default 540, under the
# tool's 10-minute call limit), so the JSON of those that finished always comes back.
# BENCH_ARGS adds flags to every benchmark (a dry run on CPU: BENCH_ARGS='--workloads
# mlp_tiny --batch-size 4 --steps 1 --rounds 1'). WITH_TESTS=1 first runs the mask and
# updater tests on the GPU. Extra XLA flags: XLA_FLAGS.
set -uo pipefail
OUT=${OUT:-device_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
BUDGET_S=${BUDGET_S:-540}; MIN_S=${MIN_S:-60}
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import jax, optax, flax; print('jax', jax.__version__, 'optax', optax.__version__, 'flax', flax.__version__, jax.devices())"
if [ "${WITH_TESTS:-0}" = 1 ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider -x tests/sparsity/test_masks.py \
    tests/sparsity/test_updater.py tests/sparsity/test_algorithms.py 2>&1 | tail -2
fi
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(train_throughput flatness_cost sparsity_overhead safe_cost)
for name in "${names[@]}"; do
  remaining=$(left)
  if [ "$remaining" -lt "$MIN_S" ]; then echo "$name: skipped, ${remaining}s left"; continue; fi
  # shellcheck disable=SC2086  # BENCH_ARGS: extra flags for every benchmark.
  timeout "$remaining" python3 -m "benchmarks.$name" ${BENCH_ARGS:-} --json-out "$OUT/${name}_gpu.json" \
    > /dev/null 2> "$OUT/${name}_stderr.txt"
  echo "$name: exit $?, $(( $(date +%s) - start ))s elapsed"
done
python3 - "$OUT" <<'PY'
import glob, json, sys
for path in sorted(glob.glob(f"{sys.argv[1]}/*_gpu.json")):
  d = json.load(open(path))
  print(d["benchmark"], d["device"]["device_kind"], d["device"]["jax"])
  for name, w in d["workloads"].items():
    keys = ("ratios", "overhead_percent", "no_recompilation", "median_step_ms")
    print(" ", name, {k: w[k] for k in keys if k in w})
PY
