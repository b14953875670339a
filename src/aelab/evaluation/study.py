"""The evaluation study, method by method: what the codes are good for, against PCA and the raw inputs.

`evaluate` reads the codes of every method (`data/codes/<method>`, from `reduce`) and the trained models
(`data/models/<variant>`) and runs each concern of this package in order. Metric keys per method:
- `recon_mse`, `recon_sse` (summed over features, mean over samples), `explained_variance`, `code/*`;
- `probe_accuracy` (logistic regression), `knn_accuracy`, `tsne/trustworthiness`;
- `denoise/<corruption>/{psnr,ssim}` (under `raw`: the corrupted input itself);
- `sparsity/*` for sigmoid-code variants; `oneclass/*` for the one-class variant and its PCA baseline.
A pre-trained stacked variant trained with `compare_scratch` also has a `<variant>-scratch` method: the same
network trained end to end from scratch for the same total epochs, evaluated the same way.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from aelab.config import VARIANTS, Params
from aelab.data.labels import label_codes, label_names_of
from aelab.data.prepared import UNREADABLE_NPZ, PreparedData
from aelab.errors import DataError
from aelab.evaluation import classification, denoising, oneclass, reduction, sparsity, tsne
from aelab.evaluation.pca_io import load_pca
from aelab.evaluation.reduction import encode_splits
from aelab.paths import CODES_DIR, EVALUATION_DIR, MODEL_FILE, MODELS_DIR, PCA_FILE
from aelab.plots import image_grid
from aelab.reducers import AutoencoderReducer


class Outputs:
    """Collects figures and tables under `data/evaluation/` and remembers which method each belongs to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_method: dict[str, list[Path]] = {}

    def path(self, relative: str, methods: tuple[str, ...] = ("all",)) -> Path:
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        for method in methods:
            self.by_method.setdefault(method, []).append(target)
        return target

    def figure(self, fig: Figure, relative: str, methods: tuple[str, ...] = ("all",)) -> None:
        fig.savefig(self.path(relative, methods), dpi=90)
        plt.close(fig)

    def table(self, frame: pd.DataFrame, relative: str, methods: tuple[str, ...] = ("all",)) -> None:
        frame.to_csv(self.path(relative, methods), index=False, float_format="%.6g")


def find_methods(codes_dir: Path, variants: Iterable[str] = VARIANTS) -> list[str]:
    """The methods with codes: the listed variants (`pipeline.variants`), PCA and the tuned variant.

    Codes of a variant no longer listed may still lie in `data/codes`; they are left out."""
    found = sorted(p.name for p in codes_dir.iterdir() if (p / "codes.npz").exists()) if codes_dir.exists() else []
    methods = [m for m in found if m in variants or m not in VARIANTS]
    if not methods:
        raise DataError(f"{codes_dir}: no codes found; run `aelab reduce` first")
    return methods


def load_codes(folder: Path) -> dict[str, np.ndarray]:
    """A method's codes from `reduce`; a truncated or foreign file names the command that writes it again."""
    path = folder / "codes.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except UNREADABLE_NPZ as err:
        raise DataError(f"{path}: cannot read codes ({err}); run `aelab reduce --method {folder.name}` again") from None


SCRATCH_SUFFIX = "-scratch"


def scratch_models(models_dir: Path, methods: list[str]) -> dict[str, Path]:
    """`<variant>-scratch` -> folder of the from-scratch baseline that `train` left beside a pre-trained variant."""
    found = {f"{m}{SCRATCH_SUFFIX}": models_dir / m / "scratch" / m for m in methods}
    return {name: folder for name, folder in found.items() if (folder / MODEL_FILE).exists()}


def evaluate_reduction(data: PreparedData, codes: dict[str, np.ndarray]) -> dict[str, float]:
    metrics = reduction.reconstruction_errors(data.test.x, codes["test_reconstruction"])
    metrics["explained_variance"] = reduction.explained_variance(data.test.x, codes["test_reconstruction"])
    metrics["code_dim"] = int(codes["train_codes"].shape[1])
    metrics.update(reduction.code_statistics(codes["test_codes"]))
    return metrics


def evaluate_classification(
    params: Params, data: PreparedData, features: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], outputs: Outputs
) -> dict[str, dict[str, float]]:
    """Probe and kNN per method (`features`: method -> (train, val, test) arrays), per-class table, confusion PNGs.

    `val_knn_accuracy` scores the validation rows the same way as `knn_accuracy` scores the test rows."""
    results, per_class = {}, {}
    for method, (train_x, val_x, test_x) in features.items():
        found = classification.classify(params.evaluate, params.seed, train_x, data.train.y, test_x, data.test.y)
        results[method] = found.metrics
        if len(val_x) and data.val.y is not None:
            k, train_y = params.evaluate.knn_neighbors, data.train.y
            results[method]["val_knn_accuracy"] = classification.knn_accuracy(k, train_x, train_y, val_x, data.val.y)
        per_class[method] = found.per_class_accuracy
        fig = classification.confusion_figure(data.test.y, found.predictions, f"{method}: linear probe on test")
        outputs.figure(fig, f"classification/confusion_{method}.png", (method,))
        confusion = pd.DataFrame({"actual": data.test.y, "predicted": found.predictions})
        outputs.table(confusion, f"confusion/{method}.csv", (method,))  # DVC's confusion template
    table = pd.DataFrame(per_class).rename_axis("class").reset_index()
    outputs.table(table, "tables/classification_per_class.csv")
    return results


def evaluate_tsne(params: Params, data: PreparedData, all_codes: dict[str, dict], outputs: Outputs) -> dict:
    keep = tsne.subsample(len(data.test.x), params.evaluate.tsne.max_samples, params.seed)
    labels = data.test.y[keep] if data.test.y is not None else None
    results = {}
    for method, codes in all_codes.items():
        points, metrics = tsne.embed(codes["test_codes"][keep], params.evaluate.tsne, params.seed)
        results[method] = metrics
        how = "codes" if codes["test_codes"].shape[1] == 2 else "t-SNE of the test codes"
        outputs.figure(tsne.scatter_figure(points, labels, f"{method}: {how}"), f"tsne/{method}.png", (method,))
    return results


def pca_denoiser(codes_dir: Path) -> PCA | None:
    """The pipeline's fitted PCA (saved by `reduce --method pca`), if PCA is among the methods."""
    path = codes_dir / "pca" / PCA_FILE
    if path.exists():
        return load_pca(path)
    if (codes_dir / "pca" / "pca.joblib").exists():  # an older layout: a pickle, which is never loaded
        raise DataError(f"{path}: not found (an old pca.joblib is never loaded); run `aelab reduce --method pca` again")
    return None


def evaluate_denoising(
    params: Params, data: PreparedData, models: dict[str, AutoencoderReducer], codes_dir: Path, outputs: Outputs
) -> dict[str, dict[str, float]]:
    denoisers = {name: model.reconstruct for name, model in models.items()}
    pca = pca_denoiser(codes_dir)
    if pca is not None:
        denoisers["pca"] = lambda x: pca.inverse_transform(pca.transform(x))
    cfg = params.evaluate.denoising
    metrics, samples = denoising.evaluate_denoisers(
        data.test.x, list(cfg.corruptions), denoisers, data.image_shape, params.seed
    )
    for name, rows in samples.items():
        fig = image_grid({k: v[: cfg.grid_samples] for k, v in rows.items()}, data.image_shape, f"denoising: {name}")
        outputs.figure(fig, f"denoising/{name}.png")
    return metrics


def evaluate_sparsity(
    params: Params, data: PreparedData, models: dict[str, AutoencoderReducer], all_codes: dict, outputs: Outputs
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        module = model.module_
        rho = module.hparams.get("rho")
        if rho is not None and name in all_codes:
            metrics, rho_hat = sparsity.unit_statistics(all_codes[name]["test_codes"], rho, params.evaluate.sparsity)
            results[name] = metrics
            fig = sparsity.histogram_figure(rho_hat, rho, f"{name}: mean activation per code unit")
            outputs.figure(fig, f"sparsity/{name}_activations.png", (name,))
        if data.image_shape is not None:
            weights, shape = sparsity.first_layer_weights(module, data.image_shape)
            title = f"{name}: first-layer weights ({min(len(weights), params.evaluate.sparsity.max_features)} units)"
            fig = sparsity.features_figure(weights, shape, params.evaluate.sparsity.max_features, title)
            outputs.figure(fig, f"features/{name}.png", (name,))
    return results


def by_label_value(params: Params, data: PreparedData) -> tuple[Params, list]:
    """`evaluate.oneclass.classes` names label values; the one-class study works on their codes."""
    cfg = params.evaluate.oneclass
    names = label_names_of(data.meta, data.train.y)
    if cfg.classes is None:
        return params, names
    codes = label_codes(cfg.classes, names, "evaluate.oneclass.classes")
    evaluate_cfg = params.evaluate.model_copy(update={"oneclass": cfg.model_copy(update={"classes": codes})})
    return params.model_copy(update={"evaluate": evaluate_cfg}), names


def _named(metrics: dict[str, float], names: list) -> dict[str, float]:
    """`oneclass/auroc/<code>` -> `oneclass/auroc/<label value>` (the same key for integer labels 0..k-1)."""
    prefix = "oneclass/auroc/"
    return {
        (f"{prefix}{names[int(k.removeprefix(prefix))]}" if k.startswith(prefix) else k): v for k, v in metrics.items()
    }


def evaluate_oneclass(params: Params, data: PreparedData, outputs: Outputs) -> dict[str, dict[str, float]]:
    cfg = params.evaluate.oneclass
    if data.train.y is None or cfg.classes == []:
        return {}
    params, names = by_label_value(params, data)
    found = oneclass.run_oneclass(params, data)
    table = pd.DataFrame(found.rows)
    table["method"] = table["method"].replace({"autoencoder": cfg.variant})
    table["class"] = [names[int(c)] for c in table["class"]]
    outputs.table(table, "tables/oneclass_per_class.csv", (cfg.variant,))
    outputs.table(pd.DataFrame(oneclass.mean_roc(found, cfg.roc_points)), "oneclass/roc.csv", (cfg.variant,))
    outputs.figure(oneclass.roc_figure(found, cfg.variant), "oneclass/roc.png", (cfg.variant,))
    return {cfg.variant: _named(found.metrics("autoencoder"), names), "pca": _named(found.metrics("pca"), names)}


def merge(results: dict[str, dict[str, float]], extra: dict[str, dict[str, float]]) -> None:
    for method, metrics in extra.items():
        results.setdefault(method, {}).update(metrics)


def evaluate(
    params: Params,
    data: PreparedData,
    codes_dir: Path = CODES_DIR,
    models_dir: Path = MODELS_DIR,
    out: Path = EVALUATION_DIR,
) -> tuple[dict[str, dict[str, float]], Outputs]:
    if out.exists():
        shutil.rmtree(out)  # a stage output: stale figures of removed methods must not linger
    outputs = Outputs(out)
    methods = find_methods(codes_dir, params.pipeline.variants)
    all_codes = {method: load_codes(codes_dir / method) for method in methods}
    models = {
        m: AutoencoderReducer.load(models_dir / m / MODEL_FILE)
        for m in methods
        if (models_dir / m / MODEL_FILE).exists()
    }
    # Pre-trained stacked variants beside the same network trained from scratch for as many epochs (`train` made it)
    for name, folder in scratch_models(models_dir, methods).items():
        models[name] = AutoencoderReducer.load(folder / MODEL_FILE)
        all_codes[name] = encode_splits(models[name], data)  # what `reduce` writes for a variant
    results = {method: evaluate_reduction(data, codes) for method, codes in all_codes.items()}
    if data.train.y is not None:
        features = {m: (c["train_codes"], c["val_codes"], c["test_codes"]) for m, c in all_codes.items()}
        features["raw"] = (data.train.x, data.val.x, data.test.x)
        merge(results, evaluate_classification(params, data, features, outputs))
    merge(results, evaluate_tsne(params, data, all_codes, outputs))
    merge(results, evaluate_denoising(params, data, models, codes_dir, outputs))
    merge(results, evaluate_sparsity(params, data, models, all_codes, outputs))
    merge(results, evaluate_oneclass(params, data, outputs))
    return {m: dict(sorted(v.items())) for m, v in sorted(results.items())}, outputs
