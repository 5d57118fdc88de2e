"""Helpers shared by the test files (not tests themselves): the strict CuPy stand-in (fakecupy), the numpy
reference kernels (reference), the optimizer comparison harness (optim_helpers), dataset files built in
memory (dataset_files) and the small digits training setup (train_helpers).

Test files import them as ``from helpers import fakecupy`` or ``from helpers.train_helpers import ...``:
tests/ is on sys.path because pytest's default "prepend" import mode puts it there (the folder of
tests/conftest.py, which has no __init__.py), whatever the working directory."""
