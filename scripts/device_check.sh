#!/usr/bin/env bash
# The GPU check, run on the device machine from the repository root by the device tool:
#   run(command="bash scripts/device_check.sh", carry=[".whl", ".gpu_data"], timeout_s=560)
# after scripts/fetch_device_wheels.sh filled .whl and .gpu_data here. Extra arguments go to
# benchmarks/gpu_recipe.py (a rerun: bash scripts/device_check.sh --skip cuda_tests --minutes 1).
# What comes back under $OUT: recipe.log, gpu_recipe.json, gpu_recipe.md and, when the new
# model beat fast, model/*.partNN: join them here with
#   python benchmarks/gpu_recipe.py --unpack-model PARTS_FOLDER mrisr/weights/full.safetensors
set -uo pipefail
out=${OUT:-runs/device_out}
limit=${LIMIT:-480} # seconds: the recipe ends inside a 10-minute command, a rerun fits the lease
run=runs/gpu_recipe
mkdir -p "$out"
# shellcheck source=scripts/device_env.sh
source scripts/device_env.sh || exit 1

timeout --kill-after=20 "$limit" python3 benchmarks/gpu_recipe.py \
    --data .gpu_data/train --out "$run" "$@" 2>&1 | tee "$out/recipe.log"
status=${PIPESTATUS[0]}
cp "$run/gpu_recipe.json" "$run/gpu_recipe.md" "$out/" 2>/dev/null
if [ -d "$run/model_parts" ]; then
    mkdir -p "$out/model" && cp "$run"/model_parts/* "$out/model/"
fi
echo "recipe exit status $status"
exit "$status"
