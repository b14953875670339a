"""Benchmark: the evaluation study on MNIST or Fashion-MNIST, for comparison with published results.

    python -m aelab.benchmarks.published --dataset mnist
    aelab report --results docs/results/mnist.json

Runs the pipeline's stages (prepare, train the undercomplete variant, reduce with it and with PCA, evaluate)
in a work folder (`data/benchmarks/<dataset>-<variant>/`, resumable: re-running reuses finished checkpoints) on the
original IDX files in `$AELAB_SHARED_DATA/<dataset>` (default `<repo>/../shared/data`), and writes what was
obtained, with the exact settings, seed, epochs and wall time per step, to `docs/results/<dataset>.json` under
the project root (paths in it are relative to the project root). This is a long run, not a test.
Extra `--set key=value` overrides go after the dataset's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from aelab.benchmarks.provenance import command_line, portable_override
from aelab.config import Params, load_params
from aelab.paths import RESULTS_DIR, project_root
from aelab.stages import evaluate, prepare, reduce, train

REPO = project_root()

# Hinton and Salakhutdinov's 784-1000-500-250-30 autoencoder; small per-class models for the one-class study.
DEFAULTS = [
    "data.val_fraction=0.1",
    "variants.undercomplete.hidden_dims=[1000, 500, 250, 30]",
    "train.batch_size=128",
    "train.lr=1.0e-3",
    "evaluate.num_threads=null",
    "evaluate.oneclass.hidden_dims=[128, 32]",
    "evaluate.oneclass.max_epochs=30",
]
EPOCHS = {"mnist": 20, "fashion-mnist": 3}


def shared_data() -> Path:
    return Path(os.environ.get("AELAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def umap_reference(params: Params) -> dict[str, float]:
    """UMAP fitted on the training split at the code size, the test split embedded with it: probe and kNN accuracy
    on the same split as the autoencoder's codes (no reconstruction, so no reconstruction metrics)."""
    import umap  # umap-learn: a benchmark reference only, not a dependency of the pipeline

    from aelab.data.prepared import load_prepared
    from aelab.evaluation.classification import classify
    from aelab.paths import PREPARED_DIR

    data = load_prepared(PREPARED_DIR)
    reducer = umap.UMAP(n_components=params.pca_components, random_state=params.seed)
    train_codes = reducer.fit_transform(data.train.x)
    test_codes = reducer.transform(data.test.x)
    found = classify(params.evaluate, params.seed, train_codes, data.train.y, test_codes, data.test.y)
    return {**found.metrics, "code_dim": params.pca_components}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(EPOCHS))
    parser.add_argument("--epochs", type=int, default=None, help="autoencoder epochs (default: mnist 20, fashion 3)")
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder (default data/benchmarks/<dataset>-<variant>)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default docs/results/<dataset>.json)")
    parser.add_argument("--variant", default="undercomplete", help="variant to train (default undercomplete)")
    parser.add_argument(
        "--umap", action="store_true", help="also embed with UMAP (umap-learn) at the code size: a reference for codes"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="reuse the work folder's trained model and codes (same data and model settings): prepare, PCA, evaluate",
    )
    args = parser.parse_args(argv)

    epochs = args.epochs or EPOCHS[args.dataset]
    variant = args.variant
    overrides = [
        f"data.source={args.dataset}",
        f"data.path={shared_data() / args.dataset}",
        *DEFAULTS,
        f"train.max_epochs={epochs}",
        f"pipeline.variants=[{variant}]",
        *args.overrides,
    ]
    params = load_params(REPO / "params.yaml", overrides)
    out = (args.out or project_root() / RESULTS_DIR / f"{args.dataset}.json").resolve()
    command = command_line("aelab.benchmarks.published", argv if argv is not None else sys.argv[1:])
    work = (args.work or REPO / "data" / "benchmarks" / f"{args.dataset}-{variant}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the stages read and write `data/...` relative to the working directory

    steps = {
        "prepare": lambda: prepare.main(params),
        f"train {variant}": lambda: train.main(params, variant),
        f"reduce {variant}": lambda: reduce.main(params, variant),
        "reduce pca": lambda: reduce.main(params, "pca"),
        "evaluate": lambda: evaluate.main(params),
    }
    previous = json.loads(out.read_text()) if args.evaluate_only and out.exists() else {}
    # PCA is refitted (seconds, deterministic): its codes follow the current protocol (unclipped reconstructions).
    reused = [name for name in steps if args.evaluate_only and name not in ("prepare", "reduce pca", "evaluate")]
    wall: dict[str, float] = {}
    for name, step in steps.items():
        if name in reused:
            wall[name] = previous.get("wall_seconds", {}).get(name, 0.0)
            continue
        begin = time.perf_counter()
        step()
        wall[name] = round(time.perf_counter() - begin, 1)
        print(f"[benchmark] {name}: {wall[name]:.0f} s", file=sys.stderr, flush=True)
    metrics = json.loads((work / "data/evaluation/all_metrics.json").read_text())
    if args.umap:
        begin = time.perf_counter()
        metrics["umap"] = umap_reference(params)
        wall["umap"] = round(time.perf_counter() - begin, 1)
    trained = json.loads((work / f"data/models/{variant}/metrics.json").read_text())
    hidden_dims = getattr(params.variant(variant), "hidden_dims", None)
    results = {
        "dataset": args.dataset,
        "command": " && ".join(filter(None, [previous.get("command"), command])),
        "overrides": [o for o in map(portable_override, overrides[2:]) if o is not None],
        "seed": params.seed,
        "autoencoder": {
            "variant": variant,
            "hidden_dims": hidden_dims,
            "max_epochs": params.train.max_epochs,
            "epochs_run": trained["epochs"],
            "best_epoch": trained["best_epoch"],
            "best_val_loss": trained.get("best_val_loss"),
        },
        "oneclass": params.evaluate.oneclass.model_dump(mode="json"),
        "wall_seconds": {**wall, "total": round(sum(wall.values()), 1)},
        "reused_steps": reused,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "metrics": metrics,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[benchmark] results -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
