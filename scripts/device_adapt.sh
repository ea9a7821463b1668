#!/usr/bin/env bash
# Per-scan adaptation on the GPU (the budgets of docs/adaptation.md, larger), run on the device machine from
# the repository root by the device tool, after scripts/fetch_device_wheels.sh here:
#   run(command="bash scripts/device_adapt.sh", carry=[".whl", ".gpu_data"], timeout_s=400)
# Extra arguments go to benchmarks/adapt.py (default: the three default volumes at 4x along
# each axis, 1000 and 4000 steps; the page is rewritten after every case, so a run cut short
# by the time limit still brings back the cases it finished). What comes back under $OUT: adapt.log,
# adaptation_gpu.md and adaptation_gpu.json; copy the page into docs/ to keep it.
set -uo pipefail
out=${OUT:-runs/device_out}
limit=${LIMIT:-360} # seconds: leaves a rerun of device_check.sh room in the lease
mkdir -p "$out"
# shellcheck source=scripts/device_env.sh
source scripts/device_env.sh || exit 1

if [ $# -eq 0 ]; then
    set -- --steps 1000 4000
fi
timeout --kill-after=20 "$limit" python3 benchmarks/adapt.py --device cuda --data .gpu_data \
    --out "$out/adaptation_gpu.md" --json "$out/adaptation_gpu.json" "$@" 2>&1 |
    tee "$out/adapt.log"
status=${PIPESTATUS[0]}
echo "adaptation exit status $status"
exit "$status"
