"""The layout of cnnkit.optim and cnnkit.schedules: packages of files under 500 lines, the same public names,
and the CUDA kernel module reached only through the one device switch (ops._backend)."""
import ast
import os

import cnnkit as ck

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "cnnkit")

OPTIM_NAMES = ["AdaGrad", "Adam", "AdamW", "LBFGS", "NonFiniteGradientError", "Optimizer", "RMSProp", "SGD",
               "apply_max_norm_", "clip_grad_norm_", "clip_grad_value_"]
SCHEDULE_NAMES = ["Constant", "Cosine", "CosineWarmRestarts", "Cyclic", "Exponential", "InverseSqrt", "InverseTime",
                  "LambdaLR", "LinearLR", "LinearWarmup", "MultiStep", "OneCycle", "Polynomial", "ReduceOnPlateau",
                  "Schedule", "SequentialLR", "SqrtDecay", "Step"]
# torch's spellings of the same classes
OPTIM_ALIASES = {"Adagrad": "AdaGrad", "RMSprop": "RMSProp"}
SCHEDULE_ALIASES = {"StepLR": "Step", "MultiStepLR": "MultiStep", "ExponentialLR": "Exponential",
                    "PolynomialLR": "Polynomial", "CosineAnnealingLR": "Cosine",
                    "CosineAnnealingWarmRestarts": "CosineWarmRestarts", "CyclicLR": "Cyclic", "OneCycleLR": "OneCycle",
                    "ReduceLROnPlateau": "ReduceOnPlateau"}


def test_public_names_unchanged():
    assert sorted(ck.optim.__all__) == sorted(OPTIM_NAMES + list(OPTIM_ALIASES))
    assert sorted(ck.schedules.__all__) == sorted(SCHEDULE_NAMES + list(SCHEDULE_ALIASES))
    for mod, aliases in ((ck.optim, OPTIM_ALIASES), (ck.schedules, SCHEDULE_ALIASES)):
        for alias, n in aliases.items():
            assert getattr(mod, alias) is getattr(mod, n)
    for n in OPTIM_NAMES:
        assert getattr(ck.optim, n).__name__ == n
    for n in SCHEDULE_NAMES:
        assert getattr(ck.schedules, n).__name__ == n
    assert issubclass(ck.optim.AdamW, ck.optim.Adam) and issubclass(ck.optim.SGD, ck.optim.Optimizer)
    assert issubclass(ck.schedules.Cosine, ck.schedules.Schedule)


def test_packages_of_small_files():
    for pkg in ("optim", "schedules"):
        d = os.path.join(PKG, pkg)
        assert os.path.isdir(d), f"cnnkit/{pkg} should be a package"
        for f in sorted(os.listdir(d)):
            if f.endswith(".py"):
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    n = sum(1 for _ in fh)
                assert n < 500, f"cnnkit/{pkg}/{f} has {n} lines"


def _imports_cuda(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "_cuda" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("ops._cuda"):
            return True
    return False


def test_optim_reaches_cuda_kernels_only_through_backend():
    paths = [os.path.join(PKG, "optim.py")] if os.path.isfile(os.path.join(PKG, "optim.py")) else []
    if os.path.isdir(os.path.join(PKG, "optim")):
        paths += [os.path.join(PKG, "optim", f) for f in os.listdir(os.path.join(PKG, "optim")) if f.endswith(".py")]
    assert paths
    assert [os.path.relpath(p, PKG) for p in paths if _imports_cuda(p)] == []
