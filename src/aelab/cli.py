"""The `aelab` command: one subcommand per DVC stage, each with `--params FILE` and repeatable `--set key=value`."""

from __future__ import annotations

import argparse
import sys

from aelab.config import VARIANTS, load_params
from aelab.errors import AelabError


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
    train.add_argument("--variant", required=True, choices=VARIANTS)
    reduce = sub.add_parser("reduce", parents=[common], help="encode the dataset with a trained variant or PCA")
    reduce.add_argument("--method", required=True, choices=[*VARIANTS, "pca"])
    sub.add_parser("evaluate", parents=[common], help="compare the codes: reconstruction, linear probe")
    report = sub.add_parser("report", help="the metrics (or benchmark results) as Markdown tables")
    report.add_argument("--metrics", default="data/metrics.json", help="metrics file (default: data/metrics.json)")
    report.add_argument(
        "--results", action="append", default=[], metavar="FILE", help="benchmark results JSON (repeatable)"
    )
    report.add_argument("--output", default=None, help="write the Markdown here instead of printing it")
    return parser


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "report":  # reads result files only, no params
        from pathlib import Path

        from aelab.evaluation.report import report

        text = report(Path(args.metrics), [Path(p) for p in args.results])
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text, end="")
        return
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
