"""Command-line entry point: ``deepmetric train | evaluate | search``.

Exit status: 0 on success; 2 for a problem with the command line, the config, a file or the
machine (one line on stderr, no traceback); 130 when interrupted (Ctrl-C); 1 for anything else,
which is a bug and keeps its traceback.

torch is imported only once a subcommand runs, so ``deepmetric --help`` and ``--version`` answer at
once.
"""

import argparse
import os
import sys

from .config import ConfigError


def build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="deepmetric",
        description="Train and evaluate embedding models for retrieval (deep metric learning).",
        epilog="Exit status: 0 success, 2 bad command line, config, file or device (one line on "
        "stderr), 130 interrupted, 1 unexpected error. Documentation: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"deepmetric {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,search}")

    train = sub.add_parser(
        "train",
        help="train from a config (default: the built-in Glyphs recipe)",
        description="Train a model, pick its best epoch on validation items of the training classes, "
        "evaluate it on unseen classes (zero_shot) and on held-out items of the training classes "
        "(held_out), next to a raw-input baseline, and write a report.",
    )
    train.add_argument("config", nargs="?", help="YAML config; omitted: the built-in Glyphs recipe")
    train.add_argument("--output", required=True, help="run folder for checkpoints, metrics and the report")
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUTPUT from its last checkpoint, with its own config.yaml",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in OUTPUT (its files are deleted once the new run is built)",
    )
    train.add_argument("--seed", type=int, help="override the config's seed")
    train.add_argument("--epochs", type=int, help="override the config's number of epochs")
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no per-epoch lines; the final figures are still printed",
    )

    evaluate = sub.add_parser(
        "evaluate",
        help="re-evaluate a trained run's selected model",
        description="Re-embed a run's sections with its selected model (model.pt), "
        "print their metrics and write evaluation.json.",
    )
    evaluate.add_argument("--output", required=True, help="the run's folder")
    evaluate.add_argument(
        "--section",
        choices=("zero_shot", "held_out"),
        help="evaluate only this section (default: every section of the run)",
    )

    search = sub.add_parser(
        "search",
        help="nearest items of a run's section for queries",
        description="Print the nearest items of a section for each query.",
    )
    search.add_argument("--output", required=True, help="the run's folder")
    search.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    search.add_argument(
        "--section",
        choices=("zero_shot", "held_out"),
        help="the items to search (default: held_out when the run has it, else zero_shot)",
    )
    search.add_argument(
        "queries",
        nargs="+",
        help="item numbers of the section, or files: .npy / .csv / .txt (one item per row, "
        "as the dataset stores it) or an image file",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _line_buffered(sys.stdout)
    from . import pipeline
    from .distributed import leave_process_group

    try:
        if args.command == "train":
            pipeline.train_command(
                args.config,
                args.output,
                resume=args.resume,
                seed=args.seed,
                epochs=args.epochs,
                overwrite=args.overwrite,
                quiet=args.quiet,
                progress=show_progress(args.quiet),
            )
        elif args.command == "evaluate":
            pipeline.evaluate_command(args.output, section=args.section)
        else:
            if args.k < 1:
                raise ConfigError(None, f"--k must be a positive integer, got {args.k}")
            pipeline.search_command(args.output, args.queries, args.k, section=args.section)
    except ConfigError as err:
        print(f"deepmetric: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (
            f"; continue with: deepmetric train --output {args.output} --resume"
            if args.command == "train"
            else ""
        )
        print(f"deepmetric: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        leave_process_group()
    return 0


def show_progress(quiet, stream=None):
    """Progress bars only for a person watching: not with --quiet, not into a file or a pipe."""
    stream = sys.stderr if stream is None else stream
    if quiet or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _line_buffered(stream):
    # Per-epoch lines reach a log file as they are printed, not when a block fills (or never,
    # when the run is killed).
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(line_buffering=True)
        except (ValueError, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main())
