"""`python -m cnnkit ...` is the `cnnkit` command (train, search); with no arguments it trains on digits."""
import sys

from .cli import main

sys.exit(main(sys.argv[1:] or ["train"]))
