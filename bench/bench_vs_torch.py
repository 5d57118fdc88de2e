"""cnnkit vs PyTorch on exactly the cases of bench/cases.json, in one process, on the CPU or a GPU.

Times conv2d (fwd, bwd_data, bwd_weight), maxpool2d 2x2/2 (fwd with indices, bwd), dropout p=0.5 (fwd, bwd)
and relu fwd at each thread count, interleaving the two libraries case by case, and prints a table of
ratio = torch time / cnnkit time (> 1: cnnkit is faster) with GFLOP/s or GB/s by the cases.json counting rules.
--device cuda: the same cases on the GPU (CuPy arrays vs torch CUDA tensors, cuDNN), conv2d in float32 with
TF32 off on both sides and then in TF32 on both sides, memory-bound ops as fractions of HBM bandwidth, the
fused Adam step on ResNet-18's parameters, and the reference-net training step; CUDA-event timing.
"""
import argparse
import os
import sys
from pathlib import Path

DEFAULT_CASES = Path(__file__).resolve().parent / "cases.json"
OPS = ("conv2d", "maxpool2d", "dropout", "relu", "e2e")
CUDA_OPS = OPS + ("adam",)  # the optimizer section runs here only on the GPU (CPU: bench/bench_optim.py)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=DEFAULT_CASES, help=f"case list (default {DEFAULT_CASES})")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed repeats per library and case (default: adaptive, 7 to 40, ~0.5 s per library)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up call, 3 repeats")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + "|".join(OPS))
    ap.add_argument("--json", type=Path, default=None, help="write all results and the machine info here")
    ap.add_argument("--import-order", choices=("cnnkit-first", "torch-first"), default="cnnkit-first",
                    help="PyTorch and cnnkit share ONE libgomp in a process (same soname); the first import "
                         "decides its env (cnnkit-first: cnnkit's OMP_WAIT_POLICY=PASSIVE default applies "
                         "to both; torch-first: libgomp's own default applies to both)")
    ap.add_argument("--torch-thp", action="store_true",
                    help="set THP_MEM_ALLOC_ENABLE=1 before importing torch, so its CPU allocator asks for "
                         "transparent huge pages as numpy's does for cnnkit's outputs (separates page-fault "
                         "cost from kernel speed on the memory-bound ops)")
    ap.add_argument("--no-check", action="store_true", help="skip the cnnkit-vs-torch result check")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu (default): numpy vs torch CPU at each --threads; cuda: CuPy vs torch on GPU 0 "
                         "(cuDNN), float32 then TF32 for conv2d, plus the fused Adam section")
    ap.add_argument("--hbm-gbs", type=float, default=4300.0,
                    help="--device cuda: HBM bandwidth in GB/s that memory-bound rates are divided by "
                         "(default 4300: an H200's copy bandwidth, about 4.3 TB/s)")
    args = ap.parse_args(argv)
    if not args.cases.is_file():
        ap.error(f"--cases: no such file {args.cases}")
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or min(args.threads) < 1:
        ap.error("--threads needs positive integers")
    valid = CUDA_OPS if args.device == "cuda" else OPS
    args.only = set(valid) if args.only is None else {o.strip() for o in args.only.split(",") if o.strip()}
    bad = args.only - set(valid)
    if bad:
        ap.error(f"--only: unknown op(s) {sorted(bad)} for --device {args.device}; choose from {'|'.join(valid)}")
    if args.hbm_gbs <= 0:
        ap.error("--hbm-gbs must be positive")
    if args.repeat is not None and args.repeat < 1:
        ap.error("--repeat must be >= 1")
    return args


ARGS = parse_args()
from vs_torch.env import ENV_AT_START  # noqa: E402,F401  read before cnnkit sets its defaults
if ARGS.torch_thp:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
# The import order decides which library loads the shared OpenMP runtime (and reads its environment) first;
# the vs_torch modules imported below then find both already loaded.
if ARGS.import_order == "torch-first":
    import torch  # noqa: E402,F401
    import torch.nn.functional as F  # noqa: E402,F401
    import cnnkit  # noqa: E402,F401
else:
    import cnnkit  # noqa: E402,F401
    import torch  # noqa: E402,F401
    import torch.nn.functional as F  # noqa: E402,F401
from vs_torch.cpu import main_cpu  # noqa: E402
from vs_torch.gpu import main_cuda  # noqa: E402


def main(args):
    if args.device == "cuda":
        return main_cuda(args)
    return main_cpu(args)


if __name__ == "__main__":
    sys.exit(main(ARGS))
