#!/usr/bin/env bash
# Runs the CUDA kernels' own source on the CPU (no GPU needed) and compares them with the CPU kernels.
# This is a host emulation: one std::thread per CUDA thread, std::barrier for __syncthreads, blocks one
# after another, atomicAdd under a mutex; each `kernel<<<grid, block, smem, stream>>>(args)` launch is
# rewritten to emu_launch(grid, block, lambda) by launch_to_call.py. It checks index math, tiling,
# split-K, Philox streams and reductions. It cannot check GPU memory-model, occupancy, or anything
# architecture-specific. It is not a substitute for tests/test_cuda_ops.py on a real GPU.
# Usage (from the repo root, after an editable build so the CPU objects exist): tools/cuda_emu/run.sh
# Takes minutes: every emulated CUDA thread is a real thread.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
OBJ=$(ls -d "$ROOT"/build/*/CMakeFiles/cnnkit_kernels.dir/csrc | head -1)
OB=$("$PY" -c "import scipy_openblas32 as s; print(s.get_lib_dir())")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/inc"
cp "$ROOT/tools/cuda_emu/cuda_runtime.h" "$WORK/inc/"
for f in conv2d maxpool2d dropout optim relu; do
  "$PY" "$ROOT/tools/cuda_emu/launch_to_call.py" "$ROOT/csrc/ops/$f.cu" "$WORK/$f.cc"
done
g++ -std=c++20 -O1 -w -fopenmp -I"$WORK/inc" -I"$ROOT/csrc" -I"$(dirname "$OB")/include" -o "$WORK/compare" \
  "$ROOT/tools/cuda_emu/compare_cpu.cc" "$WORK"/{conv2d,maxpool2d,dropout,optim,relu}.cc \
  "$OBJ"/common/runtime.cpp.o "$OBJ"/ops/{conv2d,maxpool2d,dropout,optim,relu}.cpp.o \
  -L"$OB" -lscipy_openblas -Wl,-rpath,"$OB" -lpthread
OMP_NUM_THREADS=1 "$WORK/compare"
