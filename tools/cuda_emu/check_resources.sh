#!/usr/bin/env bash
# What the host emulation cannot measure, read from ptxas (nvcc -Xptxas -v) for every csrc/ops/*.cu kernel:
# static shared memory (the launches use no dynamic shared memory; above 48 KiB a kernel needs the opt-in
# attribute, which cnnkit does not set), registers (x 256 threads per block must fit the SM's 64K registers,
# or the launch fails with cudaErrorLaunchOutOfResources), and spills to local memory (slow, reported only).
# Usage: tools/cuda_emu/check_resources.sh [arch ...]   (default: 80 90). Needs nvcc; exit 0 when every limit holds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NVCC=${NVCC:-nvcc}
archs=("$@")
[ ${#archs[@]} -eq 0 ] && archs=(80 90)
bad=0
for arch in "${archs[@]}"; do
  for cu in "$ROOT"/csrc/ops/*.cu; do
    log=$("$NVCC" -std=c++17 -O3 --fmad=false -arch=sm_"$arch" -I"$ROOT/csrc" -Xptxas -v -c "$cu" -o /dev/null 2>&1) || {
      echo "$log"; echo "FAIL nvcc sm_$arch $(basename "$cu")"; bad=1; continue; }
    # ptxas prints, per kernel: "Compiling entry function '<mangled>'", then "Used R registers, ... S bytes smem"
    echo "$log" | awk -v arch="$arch" -v file="$(basename "$cu")" '
      /Compiling entry function/ { name = $0; sub(/.*function .__?/, "", name); sub(/. for .*/, "", name) }
      /spill stores/ { split($0, a, " "); for (i = 1; i <= NF; ++i) if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) == "stores") sp = $i }
      /Used [0-9]+ registers/ {
        regs = 0; smem = 0
        for (i = 1; i <= NF; ++i) { if ($(i+1) == "registers,") regs = $i; if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) smem = $i }
        status = (smem > 49152 || regs * 256 > 65536) ? "FAIL" : "ok"
        if (status == "FAIL") failed = 1
        printf "%s sm_%s %-14s regs %3d smem %6d spill %s %s\n", status, arch, file, regs, smem, (sp == "" ? 0 : sp), substr(name, 1, 60)
        sp = ""
      }
      END { exit failed }' || bad=1
  done
done
[ $bad -eq 0 ] && echo "resources: ALL OK" || { echo "resources: FAILURES"; exit 1; }
