"""The `aelab` command: one subcommand per DVC stage, each with `--params FILE` and repeatable `--set key=value`."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
import traceback
from typing import NoReturn

from aelab.config import VARIANTS, load_params
from aelab.errors import AelabError
from aelab.paths import TUNED
from aelab.threads import WORKERS_ENV


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aelab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aelab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    sub.add_parser(
        "settings", parents=[common], help="write what each variant trains with to data/settings/<variant>.json"
    )
    train = sub.add_parser("train", parents=[common], help="train one autoencoder variant")
    train.add_argument("--variant", required=True, choices=[*VARIANTS, TUNED])
    reduce = sub.add_parser("reduce", parents=[common], help="encode the dataset with a trained variant or PCA")
    reduce.add_argument("--method", required=True, choices=[*VARIANTS, TUNED, "pca"])
    sub.add_parser(
        "evaluate",
        parents=[common],
        help="compare the codes: reconstruction, probe and kNN accuracy, t-SNE, one-class, denoising, sparsity",
    )
    _add_bench(sub, common)
    _add_oneclass(sub, common)
    _add_serving(sub)
    report = sub.add_parser("report", help="the metrics (or benchmark results) as Markdown tables")
    report.add_argument(
        "--metrics",
        default="data/evaluation/all_metrics.json",
        help="metrics file of `aelab evaluate` (default: data/evaluation/all_metrics.json)",
    )
    report.add_argument(
        "--results", action="append", default=[], metavar="FILE", help="benchmark results JSON (repeatable)"
    )
    report.add_argument(
        "--merge", action="store_true", help="results files of one dataset side by side in one set of tables"
    )
    report.add_argument("--output", default=None, help="write the Markdown here instead of printing it")
    tune = sub.add_parser(
        "tune",
        parents=[common],
        help="Optuna search over the sparse or conv variant (tune.variant; resumable, parallel)",
        description="Optuna search over the sparse or conv variant (tune.variant); the best trial goes to "
        "data/tune/best_params.yaml for `aelab train --variant tuned`.",
    )
    tune.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default: 1)")
    tune.add_argument("--n-trials", type=int, help="trial budget of the study (same as --set tune.n_trials=N)")
    tune.add_argument("--timeout", type=float, help="seconds after which no new trial starts (tune.timeout)")
    tune.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # workers started by --workers
    return parser


BENCH_DATA = ("synthetic", "digits", "mnist", "fashion-mnist", "prepared")  # = aelab.bench.DATA_KINDS
BENCH_PRECISIONS = ("32", "bf16-mixed", "16-mixed")  # = aelab.bench.PRECISIONS (not imported: torch is slow to load)


def _add_bench(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`aelab bench`: Lightning path vs a hand-written loop (the options below are shortcuts for `--set`)."""
    bench = sub.add_parser("bench", parents=[common], help="time the Lightning path against a bare PyTorch loop")
    bench.add_argument("--variant", default="undercomplete", choices=VARIANTS)
    bench.add_argument("--hidden-dims", help="encoder widths, e.g. 256,32 (sets variants.V.hidden_dims)")
    bench.add_argument("--batch-size", type=int, help="sets train.batch_size")
    bench.add_argument("--device", help="cpu | cuda | auto (sets train.accelerator)")
    bench.add_argument("--precision", choices=BENCH_PRECISIONS, help="sets train.precision")
    bench.add_argument("--steps", type=int, help="timed steps per path (default 300)")
    bench.add_argument("--warmup", type=int, help="untimed steps before them (default 30)")
    bench.add_argument(
        "--repeats", type=int, help="interleaved runs of each path; the ratio is the median pair's (default 9)"
    )
    bench.add_argument("--data", choices=BENCH_DATA, help="default synthetic: random rows, MNIST-sized")
    bench.add_argument("--data-path", help="IDX folder (mnist, fashion-mnist) or prepared folder")
    bench.add_argument("--samples", type=int, help="synthetic rows (default 60000)")
    bench.add_argument("--features", type=int, help="synthetic columns (default 784)")
    bench.add_argument(
        "--epoch", action="store_true", help="time one whole epoch with validation, checkpoints and logging"
    )
    bench.add_argument(
        "--suite", action="store_true", help="784-1000-500-250-30 at batch 128 and 256, 784-256-32 at 256, the default"
    )
    bench.add_argument("--all", action="store_true", help="the suite in both modes (steps and whole epochs)")
    bench.add_argument(
        "--profile", action="store_true", help="then cProfile the Lightning steps (with --suite: of 784-256-32)"
    )


def _bench(args: argparse.Namespace) -> None:
    from aelab import bench

    overrides = list(args.overrides)
    if args.hidden_dims:
        overrides.append(f"variants.{args.variant}.hidden_dims=[{args.hidden_dims}]")
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if args.device:
        overrides.append(f"train.accelerator={args.device}")
    if args.precision:
        overrides.append(f"train.precision='{args.precision}'")
    names = ("variant", "steps", "warmup", "repeats", "data", "data_path", "samples", "features")
    options = bench.BenchOptions(**{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    modes = ("steps", "epoch") if args.all else ("epoch",) if args.epoch else ("steps",)
    suite = args.suite or args.all
    bench.main(load_params(args.params, overrides), options, suite=suite, modes=modes, profile=args.profile)


def _add_oneclass(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`aelab oneclass`: train and keep a one-class model (the `oneclass` params section)."""
    oneclass = sub.add_parser(
        "oneclass",
        parents=[common],
        help="train a model on the normal rows and keep it with its anomaly threshold (data/models/oneclass)",
    )
    oneclass.add_argument(
        "--normal",
        action="append",
        metavar="LABEL",
        help="a normal label value (repeatable; same as --set oneclass.normal=[LABEL, ...])",
    )
    oneclass.add_argument("--out", default=None, help="bundle folder (default: data/models/oneclass)")


def _oneclass(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from aelab.stages import oneclass

    # json keeps each label a string: `--normal 3` and `--normal benign` both name a label value
    overrides = [*args.overrides, *([f"oneclass.normal={json.dumps(args.normal)}"] if args.normal else [])]
    params = load_params(args.params, overrides)
    oneclass.main(params, *([Path(args.out)] if args.out else []))


SERVING_COMMANDS = ("encode", "reconstruct", "score", "export", "bench-encode")


def _add_serving(sub: argparse._SubParsersAction) -> None:
    """Using a trained model bundle (`data/models/<name>/`) on new data; these read no params file."""
    helps = {
        "encode": "codes of the rows of a file (raw data, scaled as in training)",
        "reconstruct": "reconstructions of the rows of a file, in the raw (unscaled) space",
        "score": "anomaly score per row (+ is_anomaly for a one-class model)",
    }
    for name, text in helps.items():
        command = sub.add_parser(name, help=text)
        command.add_argument("model", help="model bundle folder, e.g. data/models/undercomplete")
        command.add_argument("input", help="rows: .csv, .parquet, .npy, .npz (x, optional y) or IDX .gz")
        command.add_argument("--out", required=True, help="output file: .csv, .parquet or .npy (numbers only)")
        command.add_argument(
            "--skip-invalid", action="store_true", help="leave out rows with NaN, inf or non-numeric values"
        )
        command.add_argument("--label-column", help="table column passed through (default: the training one, label)")
        command.add_argument("--chunk-rows", type=int, default=8192, help="rows per chunk (default 8192)")
    export = sub.add_parser("export", help="the encoder (with its input scaling) as ONNX or TorchScript")
    export.add_argument("model", help="model bundle folder")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", help="output file (default: <name>-encoder.onnx / .torchscript.pt)")
    bench = sub.add_parser("bench-encode", help="time `aelab encode` against a bare forward of the same encoder")
    bench.add_argument("--model", help="model bundle (default: a fresh 784-256-128-12 undercomplete encoder)")
    bench.add_argument("--rows", type=int, default=60000, help="rows of the .npy input (default 60000)")
    bench.add_argument("--csv-rows", type=int, default=5000, help="rows of the CSV input (default 5000)")
    bench.add_argument("--repeats", type=int, default=3, help="runs per path; the fastest counts (default 3)")
    bench.add_argument("--features", type=int, default=784, help="columns of the default model (default 784)")


def _serving(args: argparse.Namespace) -> None:
    from pathlib import Path

    if args.command == "export":
        from aelab.serving.export import export_model

        print(export_model(Path(args.model), args.format, Path(args.out) if args.out else None))
    elif args.command == "bench-encode":
        from aelab.serving.speed import bench_encode

        bench_encode(Path(args.model) if args.model else None, args.rows, args.csv_rows, args.repeats, args.features)
    else:
        from aelab.serving.commands import apply_to_file

        summary = apply_to_file(
            args.command,
            Path(args.model),
            Path(args.input),
            Path(args.out),
            skip_invalid=args.skip_invalid,
            label_column=args.label_column,
            chunk_rows=args.chunk_rows,
        )
        print(summary)


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command in SERVING_COMMANDS:
        _serving(args)
        return
    if args.command == "bench":
        _bench(args)
        return
    if args.command == "oneclass":
        _oneclass(args)
        return
    if args.command == "report":  # reads result files only, no params
        from pathlib import Path

        from aelab.evaluation.report import report

        text = report(Path(args.metrics), [Path(p) for p in args.results], merge=args.merge)
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text, end="")
        return
    if args.command == "tune":
        args.overrides += [f"tune.n_trials={args.n_trials}"] if args.n_trials is not None else []
        args.overrides += [f"tune.timeout={args.timeout}"] if args.timeout is not None else []
    params = load_params(args.params, args.overrides)
    if os.environ.get(WORKERS_ENV):  # several aelab processes share the machine: take this one's share of the cores
        from aelab.threads import configure

        configure()
    if args.command == "prepare":
        from aelab.stages import prepare

        prepare.main(params)
    elif args.command == "settings":
        from aelab.stages import settings

        settings.main(params)
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


def _quiet_libraries() -> None:
    """Keep stage output to what matters (Lightning's banners are lowered in `build_trainer`)."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # logging a model is not a download

    warnings.filterwarnings(
        "ignore", message=r".*(LeafSpec|logging interval|does not have many workers|exists and is not empty).*"
    )


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    try:
        run(argv)
    except AelabError as err:
        print(f"aelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aelab: interrupted; completed work is kept, re-run the command to resume", file=sys.stderr)
        return 130
    return 0


WARM_PRELOAD = (
    "aelab.stages.prepare",
    "aelab.stages.settings",
    "aelab.stages.train",
    "aelab.stages.reduce",
    "aelab.stages.tune",
    "aelab.stages.evaluate",
    "aelab.evaluation.study",
    "mlflow.pyfunc",
    "mlflow.store.tracking.sqlalchemy_store",
    "dvclive.lightning",
    "optuna",
    "sklearn.manifold",
    "matplotlib.pyplot",
)
"""What the warm server imports once (`aelab.warm`): the stages and what they import on first use."""


def serve_warm(path: str) -> None:
    """The warm server's entry point (started by the first command that finds none; see `aelab.warm`)."""
    from pathlib import Path

    from aelab import warm

    _quiet_libraries()
    warm.serve(Path(path), WARM_PRELOAD, _run_in_child)


def _run_in_child(argv: list[str]) -> int:
    """`main` in a warm server's child, ending as the interpreter would: exit codes, tracebacks, `finish`."""
    try:
        return main(argv)
    except SystemExit as stop:  # argparse: --help, --version, a usage error
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - what an uncaught exception does at the top of a cold process
        traceback.print_exc()
        return 1
    finally:
        finish()


def finish() -> None:
    """What the interpreter does at exit before its module teardown: wait for threads, run exit handlers, flush.

    Threads are waited for by the interpreter's own first exit step, `threading._shutdown`: it also tells idle
    thread-pool workers (MLflow's artifact uploads) to leave, which joining them alone would wait for forever.
    """
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's module teardown.

    After a command, Python's shutdown clears every imported module one by one; with torch, Lightning and MLflow
    loaded that takes 1-2 s, paid again by each of the pipeline's stages. Here started threads are waited for, the
    exit handlers run (MLflow, logging) and the output is flushed, as at a normal exit (`finish`); only the teardown
    is skipped.
    """
    finish()
    os._exit(code)


def console_main() -> NoReturn:
    """The `aelab` command: run by the warm server when one is up (`aelab.warm`), else here, cold.

    `main` returns the exit code instead, for callers in Python.
    """
    from pathlib import Path

    from aelab import warm

    server = [
        sys.executable,
        "-P",  # the path is the command's own, set below: nothing from the folder the server starts in
        "-c",
        "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from aelab.cli import serve_warm; "
        "serve_warm(sys.argv[2])",
        json.dumps(sys.path),
    ]
    code = warm.forward(sys.argv, Path(__file__).parent, server)
    exit_now(main() if code is None else code)


if __name__ == "__main__":
    console_main()
