"""Command-line entry point: ``deepmetric train | evaluate | search``.

Configuration problems are printed as one line naming the config key, with exit status 2 and no
traceback; anything else is a bug and keeps its traceback.
"""

import argparse
import sys

from .config import ConfigError
from .distributed import leave_process_group


def build_parser():
    parser = argparse.ArgumentParser(
        prog="deepmetric",
        description="Train and evaluate embedding models for retrieval (deep metric learning).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from a config (default: the embedded digits recipe)")
    train.add_argument("config", nargs="?", help="YAML config; omitted: the built-in digits recipe")
    train.add_argument("--output", required=True, help="folder for checkpoints, metrics and the report")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT's last checkpoint")
    train.add_argument("--seed", type=int, help="override the config's seed")
    train.add_argument("--epochs", type=int, help="override the config's number of epochs")

    evaluate = sub.add_parser("evaluate", help="re-evaluate a trained run on its held-out split")
    evaluate.add_argument("--output", required=True, help="the run's folder")

    search = sub.add_parser("search", help="nearest held-out items of queries")
    search.add_argument("--output", required=True, help="the run's folder")
    search.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    search.add_argument("queries", nargs="+", help="held-out item indices, or files (image / 64 values)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..utils import common_functions as c_f
    from . import pipeline

    # A run seeds a private numpy RNG for the samplers (c_f.NUMPY_RANDOM); a caller that runs
    # the command in-process gets its own back afterwards.
    library_rng = c_f.NUMPY_RANDOM
    try:
        if args.command == "train":
            pipeline.train_command(args.config, args.output, args.resume, args.seed, args.epochs)
        elif args.command == "evaluate":
            pipeline.evaluate_command(args.output)
        else:
            if args.k < 1:
                raise ConfigError(None, f"--k must be a positive integer, got {args.k}")
            pipeline.search_command(args.output, args.queries, args.k)
    except ConfigError as err:
        print(f"deepmetric: error: {err}", file=sys.stderr)
        return 2
    finally:
        c_f.NUMPY_RANDOM = library_rng
        leave_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
