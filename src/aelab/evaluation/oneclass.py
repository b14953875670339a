"""One-class classification: a model per normal class, test samples scored by their reconstruction error.

The protocol of Ruff et al. (2018) and Golan and El-Yaniv (2018): for each class c, train on the training
samples of c only; every test sample is scored, those of c are normal and all others anomalies. The score is
the mean squared reconstruction error, or (`score: standardized`) each feature's squared error divided by what
that feature's error usually is on the normal class (see `error_weights`); PCA is scored the same way. The AUROC
needs no threshold; precision, recall and F1 (anomaly = positive) use a threshold at a configured percentile
of the scores of the normal-only validation samples, as a user without anomalies at hand would set it.
PCA fitted on the same class, scored by its own reconstruction error, is the classical baseline.

Two more scores read the code as well (as DAGMM combines a density of the codes with the reconstruction error):
`mahalanobis`, the squared distance of a sample's code from the normal class's training codes under a Gaussian
fitted to them (Ledoit-Wolf shrinkage); and `combined`, the mse plus the squared Mahalanobis distance, each over
its median on the normal class's validation rows (which no model was fitted on). A conv model trained with a
transformation head (`variants.<conv variant>.transformations`) offers Golan and El-Yaniv's score,
`transformations` (the head's mean negative log-probability of the eight rotations and flips), and
`head_features` (the Mahalanobis distance of the head's hidden layer); PCA, which has no head, is scored by its
mse under a score that reads one. `features` is the Mahalanobis distance of the encoder's activations under the
code (a Gaussian on deep features, as Rippel et al. 2020 fit one to a classifier's). A list of scores adds them,
each over its median as in `combined` (`transformations_mse` and `transformations_features` name two such lists).
Each class also gets a validation
AUROC: its normal validation rows against the validation rows of every other class, training data only, so that a
score can be chosen without the test split.

The per-class models are cached under `data/checkpoints/oneclass/<run digest>/class_<c>/` (outside DVC's outputs,
like `train`'s checkpoints): an interrupted evaluation resumes, a repeated one reuses the finished models.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, roc_curve

from aelab.config import HEAD_PARTS, OneClassConfig, OneClassModelConfig, Params, score_parts
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError, DataError
from aelab.models import save_model
from aelab.models.transformations import transformation_nll
from aelab.paths import MODEL_FILE, ONECLASS_CHECKPOINTS
from aelab.reducers import AutoencoderReducer
from aelab.training.run import checkpoint_dir, fit_module

METHODS = ("autoencoder", "pca")


@dataclass
class OneClassResult:
    rows: list[dict[str, float]] = field(default_factory=list)
    """One row per (class, method): auroc, precision, recall, f1, threshold."""
    roc: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    """method -> class -> (fpr, tpr)."""

    def metrics(self, method: str) -> dict[str, float]:
        """Mean and per-class AUROC and the means of the thresholded scores, with `oneclass/` names."""
        rows = [r for r in self.rows if r["method"] == method]
        kinds = ("auroc", "precision", "recall", "f1", "val_auroc")
        out = {f"oneclass/{k}_mean": float(np.mean([r[k] for r in rows])) for k in kinds if all(k in r for r in rows)}
        out.update({f"oneclass/auroc/{int(r['class'])}": float(r["auroc"]) for r in rows})
        return out


def per_sample_error(x: np.ndarray, reconstruction: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The anomaly score: mean (optionally feature-weighted) squared reconstruction error of each sample."""
    squared = (reconstruction.astype(np.float64) - x.astype(np.float64)) ** 2
    return squared.mean(axis=1) if weights is None else (squared * weights).mean(axis=1)


def error_weights(x: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Per-feature weights of the `standardized` score, fitted on the normal class's training data.

    One over each feature's mean squared error on the normal data, shrunk toward the mean over features (so a
    feature the normal class never gets wrong does not dominate): a feature that the normal class itself
    reconstructs poorly (texture, varying edges) counts less than one it always gets right.
    """
    mean_squared = ((reconstruction.astype(np.float64) - x.astype(np.float64)) ** 2).mean(axis=0)
    return 1.0 / (mean_squared + mean_squared.mean() + np.finfo(np.float64).tiny)


def threshold_metrics(
    val_scores: np.ndarray, test_scores: np.ndarray, is_anomaly: np.ndarray, percentile: float
) -> dict[str, float]:
    """AUROC of the test scores, and precision/recall/F1 at the given percentile of the normal validation scores."""
    threshold = float(np.percentile(val_scores, percentile))
    precision, recall, f1, _ = precision_recall_fscore_support(
        is_anomaly, test_scores > threshold, average="binary", pos_label=True, zero_division=0
    )
    return {
        "auroc": float(roc_auc_score(is_anomaly, test_scores)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "threshold": threshold,
    }


def normal_subset(data: PreparedData, codes: list[int], key: str) -> PreparedData:
    """The training and validation rows whose label is one of `codes` (the test split is never trained on);
    `key` names the setting that chose them in the error for too few rows."""
    train = data.train.x[np.isin(data.train.y, codes)]
    val = data.val.x[np.isin(data.val.y, codes)]
    if len(train) < 2 or len(val) < 1:
        raise DataError(
            f"{key}: the normal label(s) have {len(train)} training and {len(val)} validation rows; "
            "at least 2 and 1 are needed"
        )
    meta = {**data.meta, "oneclass_normal": list(codes)}
    return PreparedData(Split(train, None), Split(val, None), Split(val, None), meta=meta)


def class_subset(data: PreparedData, normal: int) -> PreparedData:
    """Train and validation samples of the normal class only, for the per-class study."""
    return normal_subset(data, [normal], f"evaluate.oneclass.classes (class {normal})")


def normal_params(params: Params, cfg: OneClassConfig | OneClassModelConfig, source: str) -> Params:
    """The params a one-class model trains with: its variant's, with the one-class epochs and widths of `cfg`."""
    variant = {"max_epochs": None, **({"hidden_dims": list(cfg.hidden_dims)} if cfg.hidden_dims else {})}
    return params.derive({"train": {"max_epochs": cfg.max_epochs}, "variants": {cfg.variant: variant}}, source)


def class_params(params: Params) -> Params:
    """The params a per-class model of the study trains with."""
    return normal_params(params, params.evaluate.oneclass, "evaluate.oneclass")


def cache_folder(params: Params, subset: PreparedData, root: Path = ONECLASS_CHECKPOINTS) -> Path:
    """The per-class model's checkpoint folder: `<root>/<run digest of its params and the data>/class_<c>/`."""
    meta = {k: v for k, v in subset.meta.items() if k != "oneclass_normal"}
    folder = checkpoint_dir(class_params(params), params.evaluate.oneclass.variant, replace(subset, meta=meta), root)
    return folder / f"class_{'-'.join(map(str, subset.meta['oneclass_normal']))}"


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Ten trainings would print ten copies of Lightning's device banner."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def class_model(params: Params, subset: PreparedData, root: Path = ONECLASS_CHECKPOINTS) -> AutoencoderReducer:
    """The per-class model: loaded if it was finished before, else trained (resuming its checkpoints) and saved."""
    folder = cache_folder(params, subset, root)
    model_file = folder / MODEL_FILE
    if not model_file.exists():
        with quiet_lightning():
            module = fit_module(class_params(params), params.evaluate.oneclass.variant, subset, folder).module
        save_model(module.cpu().eval(), folder / "model.tmp")
        (folder / "model.tmp").replace(model_file)  # complete or absent, never half-written
    return AutoencoderReducer.load(model_file)


class CodeModel(Protocol):
    """What a score reads from a per-class model: codes, reconstructions and the encoder's hidden activations."""

    def transform(self, x: np.ndarray) -> np.ndarray: ...

    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...

    def features(self, x: np.ndarray) -> np.ndarray: ...

    def pathway(self, x: np.ndarray) -> np.ndarray: ...


class AutoencoderCodeModel:
    """A per-class autoencoder as a `CodeModel`: its `pathway` is the input and every encoder layer's output."""

    def __init__(self, reducer: AutoencoderReducer, batch_size: int = 2048) -> None:
        self.reducer, self.batch_size = reducer, batch_size
        self.layers = reducer.module_.encoder.layers

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.reducer.transform(x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.reducer.reconstruct(x)

    def _head(self) -> torch.nn.Module:
        module = self.reducer.module_
        if module.transform_head is None:
            raise ConfigError(
                f"evaluate.oneclass.score: the {module.variant} model has no transformation head; "
                f"set variants.{module.variant}.transformations (e.g. {{weight: 1.0}}) or choose another score"
            )
        return module.transform_head

    def head_features(self, x: np.ndarray) -> np.ndarray:
        """The transformation head's hidden layer on the images as they are: what the head learned to see."""
        return self._run(torch.nn.Sequential(self.reducer.module_.encoder, *list(self._head())[:-1]), x)

    def transformation_nll(self, x: np.ndarray) -> np.ndarray:
        """Golan and El-Yaniv's score from the model's transformation head (`models.transformations`)."""
        module, head = self.reducer.module_, self._head()
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        image_shape, shift = module.hparams["image_shape"], module.hparams.get("transformation_shift") or 0
        return transformation_nll(module.encoder, head, rows, image_shape, self.batch_size, shift).numpy()

    def features(self, x: np.ndarray) -> np.ndarray:
        """The encoder's activations under the code (a conv model's last feature map), flat: the input itself
        for a one-layer encoder."""
        return self._run(self.reducer.module_.encoder.below(len(self.layers) - 1), x)

    def _run(self, net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        """`net` on the rows of `x` in batches, its outputs flat."""
        parts = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                rows = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size], dtype=np.float32))
                parts.append(net(rows).flatten(1).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def pathway(self, x: np.ndarray) -> np.ndarray:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                h = torch.from_numpy(np.ascontiguousarray(x[start : start + self.batch_size], dtype=np.float32))
                activations = [h]
                for layer in self.layers:
                    h = layer(h)
                    activations.append(h.flatten(1))
                parts.append(torch.cat(activations, dim=1).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


class PCAModel:
    """PCA fitted on the normal class, with the autoencoder's `transform` / `reconstruct`."""

    def __init__(self, x: np.ndarray, n_components: int, seed: int) -> None:
        k = min(n_components, len(x), x.shape[1])
        self.pca = PCA(n_components=k, random_state=seed).fit(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.pca.inverse_transform(self.pca.transform(x))

    def features(self, x: np.ndarray) -> np.ndarray:
        """What lies under PCA's code, a one-layer encoder: the input."""
        return x

    def pathway(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x, self.pca.transform(x)])


def pathway_differences(model: CodeModel, x: np.ndarray) -> np.ndarray:
    """RAPP's reconstruction along the projection pathway (Kim et al. 2020): each hidden activation of the input
    minus the same activation of its reconstruction, fed through the encoder again; the input layer included."""
    return model.pathway(x).astype(np.float64) - model.pathway(model.reconstruct(x).astype(np.float32))


class NormalizedPathway:
    """RAPP's NAP: the pathway differences whitened by their principal directions on the normal training rows,
    so that each direction counts by how much it varies on normal data (directions of no variance are dropped)."""

    def __init__(self, differences: np.ndarray, rtol: float = 1e-6) -> None:
        self.mean = differences.mean(axis=0)
        _, singular, vt = np.linalg.svd(differences - self.mean, full_matrices=False)
        keep = singular > rtol * singular[0]
        self.directions, self.scale = vt[keep].T, singular[keep] / np.sqrt(len(differences))

    def __call__(self, differences: np.ndarray) -> np.ndarray:
        return (((differences - self.mean) @ self.directions / self.scale) ** 2).sum(axis=1)


def fit_score(model: CodeModel, subset: PreparedData, score: str | list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The anomaly score `score` (`evaluate.oneclass.score`), fitted on the normal class (see the module docstring):
    one part, or several added, each over its median on the normal validation rows."""
    parts = score_parts(score)
    if set(parts) & set(HEAD_PARTS) and not hasattr(model, "transformation_nll"):
        parts = ("mse",)  # PCA has no head: its row is scored by its reconstruction error
    fitted = [fit_part(model, subset, part) for part in parts]
    return fitted[0] if len(fitted) == 1 else scaled_sum(fitted, subset.val.x)


def fit_part(model: CodeModel, subset: PreparedData, part: str) -> Callable[[np.ndarray], np.ndarray]:
    """One part of a score, fitted on the normal class's training rows."""
    if part == "mse":
        return lambda x: per_sample_error(x, model.reconstruct(x))
    if part == "standardized":
        weights = error_weights(subset.train.x, model.reconstruct(subset.train.x))
        return lambda x: per_sample_error(x, model.reconstruct(x), weights)
    if part == "sap":
        return lambda x: (pathway_differences(model, x) ** 2).sum(axis=1)
    if part == "nap":
        normalized = NormalizedPathway(pathway_differences(model, subset.train.x))
        return lambda x: normalized(pathway_differences(model, x))
    if part == "transformations":
        return model.transformation_nll  # type: ignore[attr-defined]
    layers = {"mahalanobis": "transform", "features": "features", "head_features": "head_features"}
    embed = getattr(model, layers.get(part, ""), None)
    if embed is None:
        raise ConfigError(f"evaluate.oneclass.score: unknown part {part!r}")
    return gaussian_distance(embed, subset.train.x)


def gaussian_distance(embed: Callable[[np.ndarray], np.ndarray], normal_train: np.ndarray) -> Callable:
    """The squared Mahalanobis distance of `embed(x)` under a Gaussian fitted to the normal training rows'
    (Ledoit-Wolf shrinkage, so that a wide feature map with fewer rows than features still has an inverse)."""
    density = fit_gaussian(embed(normal_train))
    return lambda x: density.mahalanobis(embed(x).astype(np.float64))


def fit_gaussian(rows: np.ndarray) -> LedoitWolf:
    """A Gaussian of normal rows (codes, features) with Ledoit-Wolf shrinkage: its covariance has an inverse even
    with fewer rows than dimensions."""
    return LedoitWolf().fit(rows.astype(np.float64))


def scaled_sum(parts: list[Callable[[np.ndarray], np.ndarray]], normal_val: np.ndarray) -> Callable:
    """The parts added, each over its median on the normal validation rows: a part counts by how many times its
    usual size it is, and an unusually small part (a perfect reconstruction) cannot cancel an unusually large one."""
    scaled = [(f, usual_size(f(normal_val))) for f in parts]
    return lambda x: sum(f(x) / usual for f, usual in scaled)


def usual_size(scores: np.ndarray) -> float:
    """A score part's median on the normal validation rows, kept above zero so that it can divide."""
    return float(np.median(scores)) + float(np.finfo(np.float32).tiny)


def run_oneclass(params: Params, data: PreparedData, root: Path = ONECLASS_CHECKPOINTS) -> OneClassResult:
    if data.train.y is None or data.test.y is None or data.val.y is None:
        raise DataError("evaluate.oneclass: the dataset has no labels, so there are no classes to hold out")
    cfg = params.evaluate.oneclass
    available = sorted(int(c) for c in np.unique(data.train.y))
    classes = cfg.classes if cfg.classes is not None else available
    unknown = sorted(set(classes) - set(available))
    if unknown:
        raise DataError(f"evaluate.oneclass.classes: {unknown} not among the training labels {available}")
    result = OneClassResult(roc={m: {} for m in METHODS})
    for normal in classes:
        subset = class_subset(data, normal)
        is_anomaly = data.test.y != normal
        reducer = class_model(params, subset, root)
        model = AutoencoderCodeModel(reducer)
        pca = PCAModel(subset.train.x, cfg.pca_components or reducer.module_.code_dim, params.seed)
        for method, fitted in (("autoencoder", model), ("pca", pca)):
            scorer = fit_score(fitted, subset, cfg.score)
            val_scores, test_scores = scorer(subset.val.x), scorer(data.test.x)
            row = threshold_metrics(val_scores, test_scores, is_anomaly, cfg.threshold_percentile)
            # the score on held-out training data: normal validation rows against every other class's
            row["val_auroc"] = float(roc_auc_score(data.val.y != normal, scorer(data.val.x)))
            result.rows.append({"class": normal, "method": method, **row})
            fpr, tpr, _ = roc_curve(is_anomaly, test_scores)
            result.roc[method][normal] = (fpr, tpr)
    return result


def mean_roc(result: OneClassResult, points: int) -> dict[str, np.ndarray]:
    """Vertically averaged ROC over the classes on a common false-positive-rate grid, per method."""
    grid = np.linspace(0.0, 1.0, points)
    curves = {"fpr": grid}
    for method, per_class in result.roc.items():
        curves[method] = np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in per_class.values()], axis=0)
    return curves


def roc_figure(result: OneClassResult, variant: str) -> Figure:
    fig, axes = plt.subplots(1, len(result.roc), figsize=(5 * len(result.roc), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (method, per_class) in zip(axes[0], result.roc.items(), strict=True):
        aucs = {int(r["class"]): r["auroc"] for r in result.rows if r["method"] == method}
        for i, (normal, (fpr, tpr)) in enumerate(per_class.items()):
            ax.plot(fpr, tpr, color=cmap(i % 10), lw=1.2, label=f"{normal}: {aucs[normal]:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        name = variant if method == "autoencoder" else "PCA"
        ax.set_title(f"one-class ROC, {name} (mean AUROC {np.mean(list(aucs.values())):.3f})")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(title="normal class: AUROC", fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return fig
