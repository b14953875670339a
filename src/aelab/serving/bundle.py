"""The model bundle: one folder holding everything needed to use a trained model, without params or prepared data.

    <folder>/model.pt            weights + constructor arguments (`aelab.models.networks.save_model`; no pickle)
    <folder>/preprocessing.json  the scaling fitted by `prepare`, feature names, image shape, label names
    <folder>/oneclass.json       (one-class models only) normal classes, score (`RowScore`) and decision threshold
    <folder>/bundle.json         format version, variant, name and the list of files above, written last

A bundle is complete when `bundle.json` is: each file is written to a temporary name and renamed, and
`bundle.json` comes after the files it lists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from aelab.data.scaling import Scaler
from aelab.errors import CheckpointError
from aelab.models.networks import Autoencoder, load_networks, save_model
from aelab.paths import MODEL_FILE

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
PREPROCESSING_FILE = "preprocessing.json"
ONECLASS_FILE = "oneclass.json"
SCORE_KINDS = ("mse", "standardized", "combined")


@dataclass(frozen=True)
class Preprocessing:
    """What turns a user's raw rows into the model's input, and the names that describe them."""

    n_features: int
    scaling: dict[str, Any] | None
    """`Scaler.to_dict()` of the scaling fitted on the training split; None: inputs are used as they are."""
    feature_names: list[str] | None = None
    """Training column names (tables): DataFrames are matched by name. None: positional columns only."""
    image_shape: list[int] | None = None
    label_names: list[Any] | None = None
    """Original label values by label code (labels were recoded to 0..k-1 by `prepare`)."""
    label_column: str | None = None
    """The label column of the training table, passed through (not encoded) when present in an input table."""

    @classmethod
    def from_meta(cls, meta: dict[str, Any], n_features: int) -> Preprocessing:
        """From `data/prepared/meta.json` as `prepare` writes it (optional keys may be absent).

        Without `scaling` (data made in code rather than by `prepare`) inputs are taken as they are.
        """
        return cls(
            n_features=int(meta.get("n_features", n_features)),
            scaling=meta.get("scaling"),
            feature_names=meta.get("feature_names"),
            image_shape=meta.get("image_shape"),
            label_names=meta.get("label_names"),
            label_column=meta.get("label_column"),
        )

    @classmethod
    def identity(cls, n_features: int) -> Preprocessing:
        """For inputs that are scaled already (the pipeline's prepared splits)."""
        return cls(n_features=n_features, scaling=None)

    def scaler(self) -> Scaler | None:
        return Scaler.from_dict(self.scaling) if self.scaling is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "scaling": self.scaling,
            "feature_names": self.feature_names,
            "image_shape": self.image_shape,
            "label_names": self.label_names,
            "label_column": self.label_column,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: Path) -> Preprocessing:
        try:
            pre = cls(**state)
            if pre.scaling is not None:
                Scaler.from_dict(pre.scaling)
        except (TypeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid preprocessing ({type(err).__name__}: {err})") from None
        if pre.feature_names is not None and len(pre.feature_names) != pre.n_features:
            raise CheckpointError(f"{source}: {len(pre.feature_names)} feature_names for {pre.n_features} features")
        return pre


@dataclass(frozen=True)
class Bundle:
    module: Autoencoder
    preprocessing: Preprocessing
    oneclass: dict[str, Any] | None
    """normal (label values), threshold, score (mse | standardized with per-feature `weights` | combined with
    `code_location`, `code_precision` and `medians`), target_fpr."""
    info: dict[str, Any]
    """The content of `bundle.json`."""


def _finite_matrix(value: Any, shape: tuple[int, ...]) -> bool:
    """`value` is nested lists of finite numbers of exactly `shape`."""
    if not shape:
        return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, list) and len(value) == shape[0] and all(_finite_matrix(v, shape[1:]) for v in value)


def check_oneclass(state: dict[str, Any], n_features: int, source: Path, code_dim: int) -> dict[str, Any]:
    """A one-class record with its defaults filled in; anything unusable is a `CheckpointError` naming `source`."""
    state = {"score": "mse", "normal": None, "target_fpr": None, **state}
    threshold = state.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise CheckpointError(f"{source}: threshold must be a finite number, got {threshold!r}")
    if state["score"] not in SCORE_KINDS:
        raise CheckpointError(f"{source}: score {state['score']!r} is not one of {', '.join(SCORE_KINDS)}")
    weights = state.get("weights")
    if state["score"] == "standardized" and (not isinstance(weights, list) or len(weights) != n_features):
        raise CheckpointError(f"{source}: the standardized score needs `weights`, one per feature ({n_features})")
    if state["score"] == "combined":
        needs = {"code_location": (code_dim,), "code_precision": (code_dim, code_dim), "medians": (2,)}
        for key, shape in needs.items():
            if not _finite_matrix(state.get(key), shape):
                raise CheckpointError(
                    f"{source}: the combined score needs `{key}`, finite numbers of shape {list(shape)}"
                )
        if min(state["medians"]) <= 0:
            raise CheckpointError(f"{source}: the combined score's `medians` must be positive")
    return state


def _write_json(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def write_bundle(folder: Path, module: nn.Module, meta: dict[str, Any], oneclass: dict | None = None) -> None:
    """Save `module` (a variant's LightningModule, or an `Autoencoder`) with the preprocessing of `meta` (the prepared
    data's `meta.json`) as a bundle in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preprocessing = Preprocessing.from_meta(meta, module.input_dim)
    if preprocessing.n_features != module.input_dim:
        raise CheckpointError(
            f"{folder}: the data has {preprocessing.n_features} features but the model takes {module.input_dim}"
        )
    save_model(module, folder / (MODEL_FILE + ".tmp"))
    (folder / (MODEL_FILE + ".tmp")).replace(folder / MODEL_FILE)
    _write_json(folder / PREPROCESSING_FILE, preprocessing.to_dict())
    files = [MODEL_FILE, PREPROCESSING_FILE]
    if oneclass is not None:
        checked = check_oneclass(dict(oneclass), module.input_dim, folder / ONECLASS_FILE, module.code_dim)
        _write_json(folder / ONECLASS_FILE, checked)
        files.append(ONECLASS_FILE)
    else:
        (folder / ONECLASS_FILE).unlink(missing_ok=True)  # a threshold of an earlier model must not linger
    info = {
        "format_version": FORMAT_VERSION,
        "variant": module.variant,
        "name": folder.name,
        "input_dim": module.input_dim,
        "code_dim": module.code_dim,
        "files": files,
    }
    _write_json(folder / BUNDLE_FILE, info)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the model bundle") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return content


def read_bundle(folder: Path) -> Bundle:
    """Load a bundle written by `write_bundle`; a missing file or another format version is a `CheckpointError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no model bundle here (folder not found); `aelab train` writes one")
    if not (folder / BUNDLE_FILE).exists():
        raise CheckpointError(f"{folder / BUNDLE_FILE}: not found, so {folder} is not a model bundle")
    info = _read_json(folder / BUNDLE_FILE)
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / BUNDLE_FILE}: format_version {version!r}; this aelab reads version {FORMAT_VERSION} "
            "(train the model again with this version)"
        )
    files = info.get("files")
    if not isinstance(files, list) or MODEL_FILE not in files or PREPROCESSING_FILE not in files:
        raise CheckpointError(f"{folder / BUNDLE_FILE}: `files` must list {MODEL_FILE} and {PREPROCESSING_FILE}")
    for name in files:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing from the model bundle (listed in {BUNDLE_FILE})")
    module = load_networks(folder / MODEL_FILE)
    preprocessing = Preprocessing.from_dict(_read_json(folder / PREPROCESSING_FILE), folder / PREPROCESSING_FILE)
    if preprocessing.n_features != module.input_dim:
        raise CheckpointError(
            f"{folder / PREPROCESSING_FILE}: {preprocessing.n_features} features, but {MODEL_FILE} takes "
            f"{module.input_dim}"
        )
    oneclass = None
    if ONECLASS_FILE in files:
        record = _read_json(folder / ONECLASS_FILE)
        oneclass = check_oneclass(record, module.input_dim, folder / ONECLASS_FILE, module.code_dim)
    return Bundle(module=module, preprocessing=preprocessing, oneclass=oneclass, info=info)
