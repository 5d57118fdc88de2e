#!/usr/bin/env bash
# Runs the CUDA kernels' own source on the CPU (no GPU needed) and compares them with the CPU kernels.
# This is a host emulation: one std::thread per CUDA thread, std::barrier for __syncthreads, blocks one
# after another, atomicAdd under a mutex; each `kernel<<<grid, block, smem, stream>>>(args)` launch is
# rewritten to emu_launch(grid, block, lambda) by launch_to_call.py. It checks index math, tiling,
# split-K, Philox streams and reductions. It cannot check GPU memory-model, occupancy, or anything
# architecture-specific. It is not a substitute for tests/ops/ run on a real GPU.
#
# Every csrc/ops/*.cu file is translated, every csrc .cpp kernel source is compiled from source (no build
# folder needed), and every tools/cuda_emu/compare_*.cc file is linked in: each registers its checks with
# EMU_CASE(name) (emu.h). Usage, from anywhere: tools/cuda_emu/run.sh [case ...]   (no case: all of them)
# Takes minutes: every emulated CUDA thread is a real thread. Exit status 0 only when every check passed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
CXX=${CXX:-g++}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/inc"
cp "$HERE/cuda_runtime.h" "$WORK/inc/"
[ -f "$HERE/mma.h" ] && cp "$HERE/mma.h" "$WORK/inc/"
# -fsanitize=alignment: a misaligned typed access (a float4/double2 load through a cast pointer, say, on an
# offset view) aborts with its source line, as it would fault on a GPU.
SAN=(-fsanitize=alignment -fno-sanitize-recover=alignment)
FLAGS=(-std=c++20 -O1 -w -fopenmp "${SAN[@]}" -DCNNKIT_EMU=1 -I"$WORK/inc" -I"$ROOT/csrc" -I"$HERE")
srcs=()
for cu in "$ROOT"/csrc/ops/*.cu; do
  b=$(basename "$cu" .cu)
  "$PY" "$HERE/launch_to_call.py" "$cu" "$WORK/cu_$b.cc"
  srcs+=("$WORK/cu_$b.cc")
done
# The GEMM's vector kernels compile to nothing without their -march flags: the emulation runs the generic one.
srcs+=("$ROOT"/csrc/common/runtime.cpp "$ROOT"/csrc/gemm/*.cpp "$ROOT"/csrc/ops/*.cpp "$HERE"/compare_*.cc "$HERE/emu_main.cc")
# compile in parallel (one object per source), then link
printf '%s\n' "${srcs[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'o="$0/$(echo "{}" | tr / _).o"; '"$CXX"' "$@" -c "{}" -o "$o"' "$WORK" "${FLAGS[@]}"
"$CXX" -fopenmp "${SAN[@]}" -o "$WORK/emu" "$WORK"/*.o -lpthread
OMP_NUM_THREADS=1 "$WORK/emu" "$@"
