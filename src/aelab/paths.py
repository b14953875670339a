"""Where things live: the project root (also from inside `dvc exp run --temp`) and the output folders."""

from __future__ import annotations

import os
from pathlib import Path

PREPARED_DIR = Path("data/prepared")
SETTINGS_DIR = Path("data/settings")
"""Per variant, the params its training reads (`aelab settings`): what each `train` stage depends on."""
MODELS_DIR = Path("data/models")
ONECLASS_MODEL_DIR = MODELS_DIR / "oneclass"
"""The kept one-class model of `aelab oneclass` (a bundle with its threshold, and metrics.json)."""
CODES_DIR = Path("data/codes")
PCA_FILE = "pca.npz"
"""The fitted PCA in `CODES_DIR/pca/`, as arrays (`aelab.evaluation.pca_io`), never a pickle."""
EVALUATION_DIR = Path("data/evaluation")
METRICS_DIR = Path("data/metrics")
"""The headline metrics, one small JSON per method (`dvc metrics show`; in git, not cached by DVC)."""
ALL_METRICS_FILE = EVALUATION_DIR / "all_metrics.json"
"""Every metric of every method (read by `aelab report`), an ordinary output of `evaluate`."""
TUNE_DIR = Path("data/tune")
BEST_PARAMS_FILE = TUNE_DIR / "best_params.yaml"
"""The best trial of `aelab tune`, read by `aelab train --variant tuned` (a DVC output and params file)."""
RESULTS_DIR = Path("docs/results")
"""Benchmark results (JSON) and their generated tables, under the project root: documentation, not package data."""
STUDIES_DIR = Path("data/studies")
"""Default Optuna journals, under the real project root: never a DVC output, never inside an experiment copy."""
TUNED = "tuned"
"""The variant name under which `aelab train` trains the best trial of `aelab tune`."""
CHECKPOINTS_DIR = Path("data/checkpoints")
"""Resumable training state, one folder per run digest: outside DVC's outputs, so a failed run is never lost."""
ONECLASS_CHECKPOINTS = CHECKPOINTS_DIR / "oneclass"
"""The per-class models of `evaluate`'s one-class study, cached and resumable like the variants."""
ONECLASS_MODEL_CHECKPOINTS = CHECKPOINTS_DIR / "oneclass-model"
"""The network of `aelab oneclass`, cached per run digest: a changed threshold rate does not retrain it."""
COMPLETE_MARKER = "complete"
"""Left in a checkpoint folder by a finished run: running it again starts afresh instead of resuming."""
RAW_DIR = Path("data/raw")
"""Downloaded MNIST / Fashion-MNIST IDX files (`data.download: true`), one folder per dataset."""
MODEL_FILE = "model.pt"
"""A trained variant's weights and constructor arguments (loads with `weights_only=True`)."""

_DVC_TEMP_EXPS = Path(".dvc") / "tmp" / "exps"


def project_root(start: Path | None = None) -> Path:
    """The real project root: the folder holding `dvc.yaml`, outside DVC's temporary experiment copies.

    `dvc exp run --temp/--queue` runs the pipeline in a copy inside the project's `.dvc/tmp/exps/`; results that must
    outlive the experiment (the MLflow store, Optuna journals) belong to the project that started it.
    `AELAB_PROJECT_ROOT` overrides the search.
    """
    if env := os.environ.get("AELAB_PROJECT_ROOT"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    marker = _DVC_TEMP_EXPS.parts
    for i in range(len(parts) - len(marker) + 1):
        if parts[i : i + len(marker)] == marker:
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".dvc").is_dir():
            return candidate
    return here
