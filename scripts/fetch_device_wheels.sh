#!/usr/bin/env bash
# Prepare, on a machine with network, what benchmarks/gpu_recipe.py needs on the offline GPU
# machine, in two git-ignored folders of the repository root that the device run carries:
#   .whl/       wheels of the packages mrisr imports that the GPU image lacks (monai, nibabel;
#               torch, numpy, scipy, safetensors, pyyaml, typer, rich, matplotlib are there,
#               SimpleITK is imported only for DICOM/NRRD/MHA), for CPython 3.12 on x86-64
#   .gpu_data/  the training, validation and held-out volumes (train/, fixtures/)
# Usage, from the repository root, with mrisr installed (pip install -e .):
#   bash scripts/fetch_device_wheels.sh [DATA_TRAIN_FOLDER]    # default ../shared/data/train
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/train}
python=${PYTHON:-python}
limit_mib=60 # what travels to the device machine is limited to 64 MiB in all

# The versions installed here, which the test suite ran with.
versions=$("$python" -c 'import monai, nibabel; print(f"monai=={monai.__version__} nibabel=={nibabel.__version__}")')
rm -rf .whl .gpu_data
mkdir -p .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $versions
"$python" benchmarks/gpu_recipe.py --pack-data .gpu_data --data "$data"

# Tracked and untracked-not-ignored files travel too.
tree=$(git ls-files -z -c -o --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu_data | tail -1 | cut -f1)
total_mib=$(( (tree + carried) / 1048576 ))
ls -l .whl
echo "travels: working tree $((tree / 1048576)) MiB + .whl and .gpu_data $((carried / 1048576)) MiB = ${total_mib} MiB"
if (( total_mib > limit_mib )); then
    echo "over ${limit_mib} MiB: the device run would be refused; carry fewer volumes" >&2
    exit 1
fi
