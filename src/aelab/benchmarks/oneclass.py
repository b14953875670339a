"""Benchmark: the one-class study alone, for any variant, on MNIST or Fashion-MNIST.

    python -m aelab.benchmarks.oneclass --dataset fashion-mnist --variant conv
    aelab report --results docs/results/fashion-mnist-oneclass-conv.json

The protocol is `evaluate`'s (`aelab.evaluation.oneclass`): per normal class, a model of the variant trained on
that class's training images only, every test image scored by its reconstruction error, AUROC and thresholded
scores beside PCA on the same class. Only `prepare` runs before it, so a variant is compared without training
the pipeline's other models. Settings come from `src/aelab/benchmarks/deep-mnist.yaml` (28x28 conv layouts) with
`--set` overrides after them; per-class models are cached in the work folder, so an interrupted run resumes.
Writes the settings, seed, wall time (and which classes' models an earlier run had already trained, so that
the wall time leaves them out) and per-class figures to `docs/results/` under the project root (paths in it are
relative to the project root). This is a long run, not a test.
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

from aelab.benchmarks.provenance import command_line, portable_override, portable_path
from aelab.benchmarks.published import shared_data
from aelab.config import VARIANTS, load_params
from aelab.data.prepared import load_prepared
from aelab.evaluation.oneclass import cache_folder, class_subset, run_oneclass
from aelab.paths import MODEL_FILE, ONECLASS_CHECKPOINTS, PREPARED_DIR, RESULTS_DIR, project_root
from aelab.stages import prepare

HERE = Path(__file__).resolve().parent
DEFAULT_PARAMS = HERE / "deep-mnist.yaml"
DATASETS = ("mnist", "fashion-mnist")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: deep-mnist.yaml)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default data/benchmarks/<dataset>)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (default: docs/results/<dataset>-oneclass-<variant>.json)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    overrides = [
        f"data.source={args.dataset}",
        f"data.path={shared_data() / args.dataset}",
        "data.val_fraction=0.1",
        f"evaluate.oneclass.variant={args.variant}",
        *args.overrides,
    ]
    params = load_params(args.params.resolve(), overrides)
    out = (args.out or project_root() / RESULTS_DIR / f"{args.dataset}-oneclass-{args.variant}.json").resolve()
    command = command_line("aelab.benchmarks.oneclass", argv if argv is not None else sys.argv[1:])
    params_file = portable_path(args.params) or args.params.name  # outside the project: its name, no folders
    work = (args.work or project_root() / "data" / "benchmarks" / args.dataset).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the stages read and write `data/...` relative to the working directory

    wall: dict[str, float] = {}
    begin = time.perf_counter()
    prepare.main(params)
    wall["prepare"] = round(time.perf_counter() - begin, 1)
    data = load_prepared(PREPARED_DIR)
    cfg = params.evaluate.oneclass
    classes = cfg.classes if cfg.classes is not None else sorted(int(c) for c in set(data.train.y.tolist()))
    reused = [
        c for c in classes if (cache_folder(params, class_subset(data, c), ONECLASS_CHECKPOINTS) / MODEL_FILE).exists()
    ]
    begin = time.perf_counter()
    found = run_oneclass(params, data, ONECLASS_CHECKPOINTS)
    wall["one-class models and scores"] = round(time.perf_counter() - begin, 1)
    results = {
        "dataset": args.dataset,
        "command": command,
        "params_file": params_file,
        "overrides": [o for o in map(portable_override, overrides[2:]) if o is not None],
        "seed": params.seed,
        "oneclass": cfg.model_dump(mode="json"),
        "variant_settings": params.variant(cfg.variant).model_dump(mode="json"),
        "train": {"batch_size": params.train.batch_size, "lr": params.train.lr, "optimizer": params.train.optimizer},
        "wall_seconds": {**wall, "total": round(sum(wall.values()), 1)},
        "reused_models": reused,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "metrics": {cfg.variant: found.metrics("autoencoder"), "pca": found.metrics("pca")},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    mean = results["metrics"][cfg.variant]["oneclass/auroc_mean"]
    pca = results["metrics"]["pca"]["oneclass/auroc_mean"]
    print(f"[benchmark] {cfg.variant} mean AUROC {mean:.4f} (PCA {pca:.4f}) -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
