"""The command line: ``cnnkit train`` and ``cnnkit search``.

``cnnkit train`` with no arguments trains a small ConvNet on the bundled UCI digits and writes a run folder
(history.json, CSVs, the babysitting plots, the final model and the best epoch's (best.safetensors), a
checkpoint folder, and result.json with the test accuracy). ``cnnkit train --config run.toml`` runs a
configured experiment (keys: cnnkit.config.SCHEMA;
datasets: cnnkit.run.DATASETS; examples/configs/ has one config per dataset); ``cnnkit search --config
search.toml`` runs a random / coarse-to-fine hyperparameter search (see cnnkit.search). ``--profile`` adds
the profile of the training to the run folder (profile.txt, trace.json; see cnnkit.profiler).
"""
import argparse
import sys

from .config import ConfigError, load_config
from .run import run_training


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cnnkit", description="Train ConvNets with cnnkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model (default: a small ConvNet on the bundled digits)")
    t.add_argument("--config", help="a TOML experiment config")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--out", help="run folder (default runs/train-<time>)")
    t.add_argument("--no-plots", action="store_true")
    t.add_argument("--device", help="cpu (default), cuda or cuda:N (needs a CUDA build, a GPU and CuPy)")
    t.add_argument("--profile", action="store_true",
                   help="profile the training; writes profile.txt and trace.json into the run folder")
    s = sub.add_parser("search", help="random / coarse-to-fine hyperparameter search")
    s.add_argument("--config", required=True, help="a TOML search config")
    s.add_argument("--out")
    s.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            cfg = load_config(args.config, {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                                            "threads": args.threads, "out": args.out,
                                            "plots": False if args.no_plots else None,
                                            "device": args.device})
            _, result = run_training(cfg, profile=args.profile)
            return 0 if result["stop_reason"] is None else 1
        from .search import run_search_cli
        return run_search_cli(args.config, out=args.out, workers=args.workers)
    except ConfigError as e:
        print(f"cnnkit: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
