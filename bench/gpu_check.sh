#!/usr/bin/env bash
# One prepared command for a lent GPU machine (see ../shared/device/README.md):
# install the wheels the GPU image lacks, run the GPU tests, then the GPU
# benchmarks that are still owed, writing everything under $OUT.
#
# Here, once:   ../shared/device/wheels.sh pyyaml cftime threadpoolctl
# Then:         run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/machine.txt"
set -o pipefail

# 1. every CuPy test (kernels, stages, streaming, the randomized block Krylov on the device)
timeout 150 python3 -m pytest -q -m gpu tests 2>&1 | tail -n 40 | tee "$OUT/gpu-tests.log"

# 2. the compute with the data already resident, NumPy (16 host cores) and CuPy timed separately
timeout 200 python3 bench/gpu_eof.py --skip end_to_end_host_memory zarr_stream --out "$OUT" 2>&1 | tail -n 30 | tee "$OUT/gpu-eof.log"

# 3. the in-memory peer case on both backends (the peers are not installed there: pipeline only)
timeout 150 python3 bench/eof_peers.py --methods pipeline-randomized pipeline-gram --backend cupy --warmup 1 --repeats 3 \
    --precision float32 --out "$OUT" --tag gpu 2>&1 | tail -n 12 | tee "$OUT/eof-peers.log"
