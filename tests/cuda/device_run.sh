#!/usr/bin/env bash
# device_run.sh: build and run the CUDA tests and GPU benchmarks on a lent GPU
# machine (which has CUDA and a compiler but none of our Debian packages and no
# network). Our dependencies travel unpacked in .devcarry/root (dpkg -x of the
# Debian .debs: libsentencepiece, libprotobuf-lite32, libjsmn-dev, OpenBLAS,
# libgfortran5) and the test models in .devcarry/models; both are git-ignored.
# Usage: tests/cuda/device_run.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/qlora_out}}
mkdir -p "$out"
root=$PWD/.devcarry/root
export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
export QLORA_TEST_MODELS=$PWD/.devcarry/models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_PREFIX_PATH="$root/usr" -DCMAKE_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu/openblas-pthread" \
    -DQLORA_TEST_MODELS="$QLORA_TEST_MODELS" 2>&1 | tail -12 | tee "$out/configure.txt"
cmake --build build-gpu -j "$(nproc)" 2>&1 | grep -E "error|warning|Error" | tee "$out/build.txt"
(cd build-gpu && ctest -L cuda --output-on-failure 2>&1 | tee "$out/ctest_cuda.txt")
# the op checks of the training ops on the GPU (test_grad runs every backend present),
# once more with tiny dequantization tiles so matmul_backward_input takes many tiles
build-gpu/tests/test_grad cuda 2>&1 | tail -40 | tee "$out/test_grad_cuda.txt"
QLORA_CUDA_TILE_BYTES=4096 build-gpu/tests/test_grad "cuda matmul_bwd" 2>&1 | tail -20 | tee "$out/test_grad_cuda_tiled.txt"
build-gpu/tests/test_batch 2>&1 | grep -E "cuda|passed|FAIL" | tee "$out/test_batch_cuda.txt"
(cd build-gpu && ctest -j 8 --output-on-failure 2>&1 | tail -25 | tee "$out/ctest_all.txt")
if [ -x build-gpu/tests/bench_cuda ]; then build-gpu/tests/bench_cuda 2>&1 | tee "$out/bench_cuda.txt"; fi
build-gpu/qlora bench --backend cuda --shape all --prompt-tokens 512 --gen-tokens 128 2>&1 | tee "$out/bench_qlora_cuda.txt"
# training (trained tokens/s, forward + backward + AdamW) and multi-adapter decode on the GPU
build-gpu/qlora bench --backend cuda --shape all --train --prompt-tokens 512 --rank 16 2>&1 | tee "$out/bench_train_cuda.txt"
build-gpu/qlora bench --backend cuda --multi-adapter --prompt-tokens 16 --gen-tokens 32 --rank 8 --targets q,v 2>&1 | tee "$out/bench_multi_cuda.txt"
cp .devcarry/commit.txt "$out/commit.txt" 2>/dev/null || git rev-parse HEAD > "$out/commit.txt" 2>/dev/null || true
