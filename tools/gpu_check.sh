#!/usr/bin/env bash
# One-call GPU runbook: on a GPU machine with no internet (CUDA/nvcc, CuPy, PyTorch, pybind11,
# scikit-build-core present), from the repository root:
#   1. (nothing to carry: cnnkit has no BLAS dependency), 2. build and install cnnkit into /tmp/site
#   (CUDA forced ON), 3. print cnnkit.build_info() and cnnkit.cuda.status(), 4. pytest -q -rs the CUDA test
#   files, 5. bench/bench_vs_torch.py --device cuda --json.
# Everything lands in $OUT (default ./gpu_out): build.log, info.txt, pytest.log, bench.log, bench_cuda.json,
# summary.txt (6 files). Each stage runs under `timeout` inside one overall budget (BUDGET_S, default 570 s,
# for a 600 s call). Exit status: 0 only if every stage succeeded. See docs/kernels.md ("CUDA").
# cases.json: $CNNKIT_CASES, else bench/cases.json.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BUDGET_S=${BUDGET_S:-570}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
START=$SECONDS
declare -A RC

# stage NAME CAP_S LOG CMD...: runs CMD under timeout min(CAP_S, what is left of the budget - 10 s).
stage() {
  local name=$1 cap=$2 log=$3; shift 3
  local left=$((BUDGET_S - (SECONDS - START) - 10))
  local t=$((cap < left ? cap : left))
  if [ "$t" -le 5 ]; then
    echo "== $name: skipped, budget spent" | tee -a "$log"; RC[$name]=skipped; return 1
  fi
  echo "== $name (timeout ${t}s, at $((SECONDS - START))s)" | tee -a "$log"
  timeout --kill-after=5 "$t" "$@" >>"$log" 2>&1
  local rc=$?
  RC[$name]=$rc
  [ $rc -eq 124 ] && echo "== $name: TIMED OUT after ${t}s" | tee -a "$log"
  echo "== $name: rc=$rc at $((SECONDS - START))s" | tee -a "$log"
  return $rc
}

stage build 300 "$OUT/build.log" "$PY" -m pip install -v --no-build-isolation --no-deps --target "$SITE" \
  -C cmake.define.CNNKIT_CUDA=ON .

# From /tmp, so that nothing can import from the source tree.
(
  cd /tmp || exit 1
  { nvidia-smi 2>&1 | head -20; CNNKIT_SITE=$SITE "$PY" - <<'EOF'
import os
import cnnkit, cnnkit.cuda
print("cnnkit from", cnnkit.__file__)
if not os.path.realpath(cnnkit.__file__).startswith(os.path.realpath(os.environ["CNNKIT_SITE"]) + os.sep):
    print("WRONG cnnkit: not the one just built (an editable install elsewhere wins over PYTHONPATH)")
print("build_info", cnnkit.build_info())
print("cuda.status", cnnkit.cuda.status(), "devices", cnnkit.cuda.device_count(), "tf32", cnnkit.cuda.get_tf32())
try:
    import cupy, torch
    print("cupy", cupy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda,
          "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0))
except Exception as e:
    print("cupy/torch:", type(e).__name__, e)
EOF
  } >"$OUT/info.txt" 2>&1
  cat "$OUT/info.txt"
)
RC[info]=$(grep -q "^WRONG cnnkit" "$OUT/info.txt" && echo "wrong-cnnkit" ||
           (grep -q "^cuda.status ok" "$OUT/info.txt" && echo 0 || echo "cuda-unusable"))

TESTS=()
for f in tests/test_cuda.py tests/test_cuda_dispatch.py tests/ops tests/test_cuda_tf32.py tests/test_cuda_augment.py tests/test_cuda_optim.py tests/test_cuda_e2e.py tests/test_device.py tests/test_data_device.py; do [ -e "$f" ] && TESTS+=("$ROOT/$f"); done
cd /tmp
stage pytest 420 "$OUT/pytest.log" "$PY" -m pytest -q -rs -p no:cacheprovider "${TESTS[@]}"
cd "$ROOT"
tail -15 "$OUT/pytest.log"

CASES=${CNNKIT_CASES:-}
for c in "$ROOT/bench/cases.json"; do
  [ -z "$CASES" ] && [ -f "$c" ] && CASES=$c
done
if [ -z "$CASES" ]; then
  echo "no cases.json (set CNNKIT_CASES, or carry it as .whl/cases.json)" | tee "$OUT/bench.log"
  RC[bench]=no-cases
else
  CASES=$(cd "$(dirname "$CASES")" && pwd)/$(basename "$CASES")
  cd /tmp
  stage bench 420 "$OUT/bench.log" "$PY" "$ROOT/bench/bench_vs_torch.py" --device cuda --cases "$CASES" \
    --json "$OUT/bench_cuda.json"
  cd "$ROOT"
  grep -A5 "geometric mean" "$OUT/bench.log"
fi

{
  echo "gpu_check.sh finished in $((SECONDS - START))s (budget ${BUDGET_S}s)"
  for k in build info pytest bench; do echo "$k: ${RC[$k]:-not run}"; done
} | tee "$OUT/summary.txt"
for k in build info pytest bench; do [ "${RC[$k]:-x}" = 0 ] || exit 1; done
exit 0
