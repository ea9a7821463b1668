#!/usr/bin/env bash
# Sourced by the device scripts (scripts/device_check.sh, scripts/device_adapt.sh) on the
# GPU machine: installs the carried wheels (.whl, from scripts/fetch_device_wheels.sh) into
# /tmp/site and makes mrisr importable. Returns non-zero when the wheels cannot be installed.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# The build backend cannot be fetched offline: build with the image's setuptools, else run
# mrisr from the checkout (the scripts call `python -m mrisr`, not the console script).
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1; then
    echo "editable install failed; running mrisr from the checkout"
    export PYTHONPATH=$PWD:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
