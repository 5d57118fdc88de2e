"""The parts of bench/bench_vs_torch.py: timing, the case families, the machine description and the CPU and
GPU runs. Imported only after the driver has imported cnnkit and torch in the order it was asked for."""
