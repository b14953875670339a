"""The `aelab` command: one subcommand per DVC stage, each with `--params FILE` and repeatable `--set key=value`."""

from __future__ import annotations

import argparse
import sys

from aelab.config import VARIANTS, load_params
from aelab.errors import AelabError
from aelab.paths import TUNED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aelab", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param by dotted key, as `dvc exp run -S` does (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", parents=[common], help="load, split and scale the dataset into data/prepared")
    train = sub.add_parser("train", parents=[common], help="train one autoencoder variant")
    train.add_argument("--variant", required=True, choices=[*VARIANTS, TUNED])
    reduce = sub.add_parser("reduce", parents=[common], help="encode the dataset with a trained variant or PCA")
    reduce.add_argument("--method", required=True, choices=[*VARIANTS, TUNED, "pca"])
    sub.add_parser("evaluate", parents=[common], help="compare the codes: reconstruction, linear probe")
    tune = sub.add_parser("tune", parents=[common], help="Optuna search over the sparse variant (resumable, parallel)")
    tune.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default: 1)")
    tune.add_argument("--n-trials", type=int, help="trial budget of the study (same as --set tune.n_trials=N)")
    tune.add_argument("--timeout", type=float, help="seconds after which no new trial starts (tune.timeout)")
    tune.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # workers started by --workers
    return parser


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "tune":
        args.overrides += [f"tune.n_trials={args.n_trials}"] if args.n_trials is not None else []
        args.overrides += [f"tune.timeout={args.timeout}"] if args.timeout is not None else []
    params = load_params(args.params, args.overrides)
    if args.command == "prepare":
        from aelab.stages import prepare

        prepare.main(params)
    elif args.command == "train":
        from aelab.stages import train

        train.main(params, args.variant)
    elif args.command == "reduce":
        from aelab.stages import reduce

        reduce.main(params, args.method)
    elif args.command == "evaluate":
        from aelab.stages import evaluate

        evaluate.main(params)
    elif args.command == "tune":
        from aelab.stages import tune

        worker_argv = ["--params", args.params, *(part for o in args.overrides for part in ("--set", o))]
        tune.main(params, args.workers, worker_argv, summary=not args.no_summary)


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except AelabError as err:
        print(f"aelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aelab: interrupted; completed work is kept, re-run the command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
