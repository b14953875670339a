"""Helpers shared by test modules of several levels (unit, integration, system); fixtures live in conftest.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pandas as pd
import torch
import yaml
from optuna.trial import TrialState

import aelab
from aelab.config import load_params, validate_params
from aelab.data.prepared import PreparedData, Split
from aelab.data.scaling import Scaler
from aelab.models import VARIANT_CLASSES, build_module
from aelab.serving.bundle import write_bundle
from aelab.tuning import space
from tests.conftest import REPO, TINY_PARAMS


# ---- the repository's params -----------------------------------------------------------------------------------
def imported_modules(*modules: str) -> set[str]:
    """Every module a fresh interpreter has loaded after importing `modules` (what a process of ours pays for)."""
    code = f"import sys, {', '.join(modules)}; print(' '.join(sys.modules))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(result.stdout.split())


def repo_params(*overrides: str):
    """The checkout's params.yaml with `--set`-style overrides."""
    return load_params(REPO / "params.yaml", overrides)


FAST = ["train.max_epochs=2", "tracking.log_model=false", "train.accelerator=cpu"]


def fast_params(*overrides: str):
    """The checkout's params.yaml, shortened to two epochs on the CPU without model logging."""
    return load_params(REPO / "params.yaml", [*FAST, *overrides])


# ---- deep variants ---------------------------------------------------------------------------------------------
BASE = {
    "variants": {
        "undercomplete": {"hidden_dims": [16, 8]},
        "sparse": {"hidden_dims": [32]},
        "denoising": {"hidden_dims": [16, 8], "corruption": [{"kind": "masking", "p": 0.2}]},
    },
    "train": {"batch_size": 32, "lr": 5.0e-3, "max_epochs": 2},
    "tracking": {"log_model": False},
}


def make_params(overrides: dict | None = None, **variants: dict):
    raw = {key: dict(value) for key, value in BASE.items()}
    raw["variants"] = {**BASE["variants"], **variants}
    for key, value in (overrides or {}).items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_params(raw, "test")


def conv_variant(blocks: list[dict], code_dim: int = 6, **extra) -> dict:
    return {"blocks": blocks, "code_dim": code_dim, **extra}


BLOCK_SETS = {
    "stride2": [{"channels": 4, "stride": 2}, {"channels": 8, "stride": 2}],
    "pool2-batchnorm": [{"channels": 4, "pool": 2, "norm": "batch"}, {"channels": 8, "kernel": 5, "pool": 2}],
    "even-kernel-stride3": [{"channels": 4, "kernel": 4, "stride": 3}, {"channels": 6, "kernel": 2, "stride": 1}],
}


# ---- evaluation data -------------------------------------------------------------------------------------------
def blobs(n_per_class: int, n_features: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes in [0, 1]: each lights up its own third of the features."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in range(3):
        x = rng.uniform(0.0, 0.15, size=(n_per_class, n_features))
        x[:, label * n_features // 3 : (label + 1) * n_features // 3] += 0.7
        xs.append(x)
        ys.append(np.full(n_per_class, label))
    order = rng.permutation(3 * n_per_class)
    return np.concatenate(xs)[order].astype(np.float32), np.concatenate(ys)[order].astype(np.int64)


def tiny_data(seed: int = 0) -> PreparedData:
    splits = [Split(*blobs(n, seed=seed + i)) for i, n in enumerate((40, 12, 20))]
    return PreparedData(*splits, meta={"name": "blobs", "image_shape": [1, 4, 4], "n_features": 16})


# ---- tuning ----------------------------------------------------------------------------------------------------
TINY_TUNE = {
    "n_trials": 5,
    "max_epochs": 2,
    "sampler": {"n_startup_trials": 2},
    "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "space": {
        "hidden_units": {"low": 16, "high": 160, "log": True},
        "rho": {"low": 0.02, "high": 0.3},
        "beta": {"low": 1.0e-3, "high": 1.0},
        "lr": {"low": 1.0e-3, "high": 3.0e-2},
    },
}


def tiny_raw(**tune):
    return {**TINY_PARAMS, "tune": {**TINY_TUNE, **tune}}


def load_study(project, params):
    ctx_name = space.study_name(params, space.search_digest(params, prepared(project)))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(project / "data/studies" / f"{ctx_name}.journal"))
    )
    return optuna.load_study(study_name=ctx_name, storage=storage)


def prepared(project):
    from aelab.data.prepared import load_prepared

    return load_prepared(project / "data/prepared")


def states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def finished(study):
    return sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states(study))


def tune_runs(project):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["aelab-tune"], output_format="list")


# ---- serving bundles -------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["alpha", "beta", "gamma", "delta", "eps"]


def digits_bundle(folder, x: np.ndarray, variant: str = "undercomplete", kind: str = "per_feature"):
    """An untrained model with a scaling fitted on part of the digits: enough to compare code paths."""
    torch.manual_seed(0)
    module = build_module(validate_params(TINY_PARAMS), variant, 64, (1, 8, 8))
    meta = {"n_features": 64, "scaling": Scaler(kind).fit(x[:1200]).to_dict(), "image_shape": [1, 8, 8]}
    write_bundle(folder, module, meta)
    return module, Scaler.from_dict(meta["scaling"])


def table_bundle(folder, n: int = 240, oneclass: bool = True):
    """A table of 5 named measurements with a string label; one-class: normal = 'benign' at the median score."""
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 3.0, (n, len(TABLE_COLUMNS))).astype(np.float32)
    frame = pd.DataFrame(x, columns=TABLE_COLUMNS)
    frame["kind"] = np.where(rng.random(n) < 0.8, "benign", "malignant")
    torch.manual_seed(0)
    module = VARIANT_CLASSES["undercomplete"](input_dim=len(TABLE_COLUMNS), hidden_dims=[4, 2])
    meta = {
        "n_features": len(TABLE_COLUMNS),
        "scaling": Scaler("per_feature").fit(x[: n // 2]).to_dict(),
        "feature_names": TABLE_COLUMNS,
        "label_names": ["benign", "malignant"],
        "label_column": "kind",
    }
    write_bundle(folder, module, meta)
    if oneclass:
        threshold = float(np.median(aelab.load(folder).score(frame[TABLE_COLUMNS])))
        write_bundle(folder, module, meta, {"normal": ["benign"], "threshold": threshold, "target_fpr": 0.05})
    return frame


def log_table_model(tmp_path):
    """The table bundle logged (and registered) as an MLflow pyfunc model in a SQLite store in `tmp_path`."""
    from aelab.serving.pyfunc import log_bundle_model

    frame = table_bundle(tmp_path / "table")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_name="serving")
    with mlflow.start_run():
        info = log_bundle_model(tmp_path / "table", "model", register_as="aelab-undercomplete")
    return frame, info


# ---- the README's own-data section ------------------------------------------------------------------------------
def readme_section() -> tuple[dict, list[str]]:
    """The section's params file and its commands, exactly as the README shows them."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    params = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    return params, commands
