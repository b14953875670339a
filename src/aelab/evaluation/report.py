"""`aelab report`: the metrics file (or a benchmark's results file) as Markdown tables.

A results file (from `python -m aelab.benchmarks.published`) adds how the numbers were obtained and the
published figures
beside ours (`ANCHORS`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aelab.errors import DataError

BEST = "best autoencoder"
"""An anchor's `ours` method meaning: the best of our variants (PCA and raw inputs excluded) on that metric."""


def _oneclass(method: str, source: str, value: float, **extra: Any) -> dict[str, Any]:
    """A published mean one-class AUROC (in %), beside the best of our variants (or `like_for_like`)."""
    return {
        "what": f"one-class mean AUROC (%), {method}",
        "source": source,
        "value": value,
        "ours": (BEST, "oneclass/auroc_mean"),
        "scale": 100.0,
        **extra,
    }


def _raw_logistic(value: float) -> dict[str, Any]:
    return {
        "what": "logistic regression on raw pixels, test accuracy",
        "source": "Xiao et al. 2017 (Fashion-MNIST benchmark)",
        "value": value,
        "ours": ("raw", "probe_accuracy"),
    }


RUFF = "Ruff et al. 2018, Table 1 (GCN preprocessing)"
GOLAN = "Golan & El-Yaniv 2018 (GCN-style preprocessing)"

# Published figures, by dataset: what, source, value, our metric as (method, key), scale to the anchor's unit; an
# anchor with `code_dim` applies only to methods of that code size, `lower_is_better` picks the best autoencoder.
ANCHORS: dict[str, list[dict[str, Any]]] = {
    "mnist": [
        {
            "what": "test summed squared error, 784-1000-500-250-30 autoencoder",
            "source": "Hinton & Salakhutdinov 2006",
            "value": 3.00,
            "ours": (BEST, "recon_sse"),
            "lower_is_better": True,
            "code_dim": 30,
        },
        {
            "what": "test summed squared error, PCA with 30 components",
            "source": "Hinton & Salakhutdinov 2006",
            "value": 13.87,
            "ours": ("pca", "recon_sse"),
            "code_dim": 30,
        },
        _oneclass("one-class Deep SVDD", RUFF, 94.8),
        _oneclass("convolutional autoencoder", RUFF, 89.7, like_for_like="conv"),
        _oneclass("geometric transformations", GOLAN, 98.0),
        _raw_logistic(0.917),
    ],
    "fashion-mnist": [_oneclass("geometric transformations", GOLAN, 93.5), _raw_logistic(0.842)],
}

SUMMARY_COLUMNS = {
    "code_dim": "code size",
    "recon_mse": "recon MSE",
    "recon_sse": "recon SSE",
    "explained_variance": "explained var.",
    "code/effective_dims": "effective dims",
    "probe_accuracy": "linear probe acc.",
    "knn_accuracy": "kNN acc.",
    "val_knn_accuracy": "kNN acc. (validation)",
    "tsne/trustworthiness": "t-SNE trustworthiness",
    "oneclass/auroc_mean": "one-class AUROC",
}
SPARSITY_COLUMNS = {
    "sparsity/rho": "rho",
    "sparsity/mean_activation": "mean activation",
    "sparsity/mean_abs_deviation": "mean abs(rho_hat - rho)",
    "sparsity/dead_fraction": "dead",
    "sparsity/always_on_fraction": "always on",
    "sparsity/active_per_sample": "active units per sample",
}


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 10):
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(metrics: dict[str, dict[str, float]]) -> str:
    columns = [k for k in SUMMARY_COLUMNS if any(k in m for m in metrics.values())]
    rows = [[method] + [fmt(values.get(k)) for k in columns] for method, values in metrics.items()]
    return table(["method"] + [SUMMARY_COLUMNS[k] for k in columns], rows)


def denoising_table(metrics: dict[str, dict[str, float]]) -> str | None:
    pattern = re.compile(r"denoise/(.+)/psnr$")
    corruptions = sorted({m.group(1) for v in metrics.values() for k in v if (m := pattern.match(k))})
    if not corruptions:
        return None
    methods = [m for m, v in metrics.items() if any(k.startswith("denoise/") for k in v)]
    methods.sort(key=lambda m: (m != "raw", m != "pca", m))
    rows = []
    for name in corruptions:
        cells = []
        for method in methods:
            psnr, ssim = metrics[method].get(f"denoise/{name}/psnr"), metrics[method].get(f"denoise/{name}/ssim")
            cells.append(fmt(psnr) + (f" / {fmt(ssim)}" if ssim is not None else ""))
        rows.append([name, *cells])
    header = ["corruption", *[("corrupted input" if m == "raw" else m) for m in methods]]
    return "PSNR (dB) / SSIM against the clean test data:\n\n" + table(header, rows)


def oneclass_table(metrics: dict[str, dict[str, float]]) -> str | None:
    pattern = re.compile(r"oneclass/auroc/(\d+)$")
    methods = [m for m, v in metrics.items() if "oneclass/auroc_mean" in v]
    if not methods:
        return None
    classes = sorted({int(m.group(1)) for v in metrics.values() for k in v if (m := pattern.match(k))})
    rows = [[str(c), *[fmt(metrics[m].get(f"oneclass/auroc/{c}")) for m in methods]] for c in classes]
    for key, label in (("auroc", "**mean AUROC**"), ("precision", "mean precision"), ("recall", "mean recall")):
        rows.append([label, *[fmt(metrics[m].get(f"oneclass/{key}_mean")) for m in methods]])
    rows.append(["mean F1", *[fmt(metrics[m].get("oneclass/f1_mean")) for m in methods]])
    if any("oneclass/val_auroc_mean" in metrics[m] for m in methods):  # what a score or recipe is chosen on
        rows.append(["mean validation AUROC", *[fmt(metrics[m].get("oneclass/val_auroc_mean")) for m in methods]])
    return "One-class AUROC per normal class (anomalies: all other classes):\n\n" + table(
        ["normal class", *methods], rows
    )


def sparsity_table(metrics: dict[str, dict[str, float]]) -> str | None:
    methods = [m for m, v in metrics.items() if "sparsity/rho" in v]
    if not methods:
        return None
    rows = [[m, *[fmt(metrics[m].get(k)) for k in SPARSITY_COLUMNS]] for m in methods]
    return table(["method", *SPARSITY_COLUMNS.values()], rows)


def anchors_table(dataset: str, metrics: dict[str, dict[str, float]]) -> str | None:
    anchors = ANCHORS.get(dataset)
    if not anchors:
        return None
    rows: list[list[str]] = []
    for anchor in anchors:
        method, key = anchor["ours"]
        if key in metrics.get(anchor.get("like_for_like", ""), {}):  # the same kind of model, where we have it
            method = anchor["like_for_like"]
        elif method == BEST:
            ours_methods = [m for m, v in metrics.items() if m not in ("pca", "raw", "umap") and key in v]
            if "code_dim" in anchor:
                ours_methods = [m for m in ours_methods if metrics[m].get("code_dim") == anchor["code_dim"]]
            pick = min if anchor.get("lower_is_better") else max
            method = pick(ours_methods, key=lambda m: metrics[m][key], default=BEST)
        if "code_dim" in anchor and metrics.get(method, {}).get("code_dim") != anchor["code_dim"]:
            continue  # a figure for another code size
        ours = metrics.get(method, {}).get(key)
        if ours is None:  # e.g. a one-class study alone has no raw-pixel classifier
            continue
        ours_text = fmt(ours * anchor.get("scale", 1.0))
        suffix = method[method.index(" (") :] if " (" in method else ""  # a merged file's methods share a suffix
        pca = metrics.get(f"pca{suffix}", {})
        if key == "oneclass/auroc_mean" and key in pca:
            ours_text += f" (our PCA: {fmt(pca[key] * anchor.get('scale', 1.0))})"
        rows.append([anchor["what"], f"{anchor['value']:g}", anchor["source"], f"{method}: {ours_text}"])
    return table(["figure", "published", "source", "ours"], rows) if rows else None


def provenance(results: dict[str, Any]) -> str:
    ae = results.get("autoencoder", {})
    wall = results.get("wall_seconds", {})
    machine = results.get("machine", {})
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in wall.items() if k != "total")
    settings = {o.partition("=")[0]: o for o in results.get("overrides", [])}  # the last of a repeated key wins
    lines = [f"- command: `{results.get('command', '?')}` (seed {results.get('seed', '?')})"]
    if ae:
        lines.append(
            " ".join(["- autoencoder", *(str(v) for v in (ae.get("variant"), ae.get("hidden_dims")) if v)])
            + f": {ae.get('epochs_run')} epochs run "
            f"(max {ae.get('max_epochs')}, best epoch {ae.get('best_epoch')}"
            + (f", validation loss {ae['best_val_loss']:.6g}" if ae.get("best_val_loss") is not None else "")
            + ")"
        )
    if "variant_settings" in results:  # a one-class benchmark: the per-class model's layout
        oneclass = results.get("oneclass", {})
        layout = {k: v for k, v in results["variant_settings"].items() if v not in (None, [], False)}
        if oneclass.get("hidden_dims"):
            layout["hidden_dims"] = oneclass["hidden_dims"]
        lines.append(
            f"- per-class {oneclass.get('variant')} models, {oneclass.get('max_epochs')} epochs each "
            f"(from `{Path(results.get('params_file') or '?').name}`): `{json.dumps(layout, separators=(',', ':'))}`"
        )
    return "\n".join(
        [
            *lines,
            f"- settings: {', '.join(f'`{o}`' for o in settings.values())}",
            f"- wall time {wall.get('total', 0) / 60:.1f} min on {machine.get('cpus', '?')} CPUs "
            f"({machine.get('torch_threads', '?')} torch threads): {steps}"
            + (
                f" (reused from the run before: {', '.join(results['reused_steps'])})"
                if results.get("reused_steps")
                else ""
            )
            + (
                f" (the models of classes {results['reused_models']} were trained by an earlier run with the same "
                "settings and only scored here)"
                if results.get("reused_models")
                else ""
            ),
        ]
    )


def render(metrics: dict[str, dict[str, float]], results: dict[str, Any] | None = None) -> str:
    parts = []
    if results is not None:
        parts += [f"### {results['dataset']}", provenance(results)]
        if anchors := anchors_table(results["dataset"], metrics):
            parts.append(anchors)
    parts.append(summary_table(metrics))
    parts += [t for t in (oneclass_table(metrics), denoising_table(metrics), sparsity_table(metrics)) if t]
    return "\n\n".join(parts) + "\n"


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def merged(loaded: list[tuple[Path, dict[str, Any]]]) -> str:
    """Results files of one dataset side by side: one set of tables, each file's provenance in turn.

    A method in several files (PCA, for instance) is shown once where the figures agree, else per file.
    """
    datasets = {results["dataset"] for _, results in loaded}
    if len(datasets) != 1:
        raise DataError(f"--merge: the results files are of several datasets ({', '.join(sorted(datasets))})")
    metrics: dict[str, dict[str, float]] = {}
    for path, results in loaded:
        for method, values in results["metrics"].items():
            if method in metrics and metrics[method] != values:
                method = f"{method} ({path.stem})"
            metrics.setdefault(method, values)
    parts = [f"### {datasets.pop()}"]
    for path, results in loaded:
        parts.append(f"`{path.name}`:\n\n{provenance(results)}")
    if anchors := anchors_table(loaded[0][1]["dataset"], metrics):
        parts.append(anchors)
    parts.append(summary_table(metrics))
    parts += [t for t in (oneclass_table(metrics), denoising_table(metrics), sparsity_table(metrics)) if t]
    return "\n\n".join(parts) + "\n"


def report(metrics_file: Path, results_files: list[Path], merge: bool = False) -> str:
    if not results_files:
        return render(read_json(metrics_file, "metrics file (run `aelab evaluate` or `dvc repro` first)"))
    loaded = []
    for path in results_files:
        results = read_json(path, "results file")
        if "metrics" not in results or "dataset" not in results:
            raise DataError(f"{path}: not a benchmark results file (needs 'dataset' and 'metrics')")
        loaded.append((path, results))
    if merge:
        return merged(loaded)
    return "\n".join(render(results["metrics"], results) for _, results in loaded)
