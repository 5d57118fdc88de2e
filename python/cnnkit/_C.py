"""cnnkit._C: the compiled kernels, as the one extension module this CPU runs.

The extension is built once per instruction-set level: ``_C_generic`` (the x86-64 baseline), ``_C_avx2``
(x86-64-v3: AVX2, FMA) and ``_C_avx512`` (x86-64-v4: AVX-512), or a single ``_C_native`` when built with
CNNKIT_NATIVE=ON. ``_cpu`` (baseline code, no kernels) says which levels the CPU runs; this module then
loads the best of those that was built, or the one CNNKIT_ISA names, and re-exports its functions, so every
kernel that runs was compiled for a level the CPU has. Nothing above the chosen level is ever loaded.
"""
import importlib
import importlib.util
import os

from . import _cpu

LEVELS = ("avx512", "avx2", "generic")   # best first


def _built():
    return [isa for isa in LEVELS + ("native",) if importlib.util.find_spec(f"{__package__}._C_{isa}") is not None]


def _choose(env, supported, built):
    """The module to load: CNNKIT_ISA's level (checked) or the best built level the CPU runs."""
    if "native" in built:
        return "native"             # one module for the build machine; CNNKIT_ISA picks its GEMM kernel
    if env:
        if env not in LEVELS:
            raise ImportError(f"CNNKIT_ISA must be one of {', '.join(LEVELS)}, got '{env}'")
        if env not in supported:
            raise ImportError(f"CNNKIT_ISA: this CPU cannot run '{env}' (supported: {','.join(supported)})")
        if env not in built:
            raise ImportError(f"CNNKIT_ISA: '{env}' kernels are not compiled into this build "
                              f"(built: {','.join(built)})")
        return env
    for isa in supported:
        if isa in built:
            return isa
    raise ImportError(f"cnnkit: no kernel module this CPU can run was built (CPU: {','.join(supported)}; "
                      f"built: {','.join(built) or 'none'}); reinstall cnnkit")


SUPPORTED = _cpu.supported().split(",")
BUILT = _built()
MODULE_ISA = _choose(os.environ.get("CNNKIT_ISA", ""), SUPPORTED, BUILT)
_module = importlib.import_module(f"{__package__}._C_{MODULE_ISA}")
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
