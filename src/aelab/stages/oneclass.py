"""`aelab oneclass`: train the one-class model you keep (`aelab.evaluation.detector`) and write its bundle.

Output: `data/models/oneclass/`, a model bundle that carries the normal labels and the threshold (used by
`aelab score` and `model.predict`), and its `metrics.json` (test AUROC, and precision, recall and false-positive
rate at the threshold).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from aelab.config import Params
from aelab.data.prepared import load_prepared
from aelab.evaluation.detector import save_oneclass, train_oneclass
from aelab.paths import ONECLASS_MODEL_DIR, PREPARED_DIR


def main(params: Params, out: Path = ONECLASS_MODEL_DIR) -> None:
    data = load_prepared(PREPARED_DIR)
    model = train_oneclass(params, data)
    save_oneclass(params, model, data, out)
    m = model.metrics
    keys = ("auroc", "precision", "recall", "false_positive_rate")
    shown = {k: "n/a" if m[k] is None else f"{m[k]:.4f}" for k in keys}
    Console(stderr=True).print(
        f"one-class {params.oneclass.variant} (normal: {', '.join(map(str, model.normal))}) -> {out}: "
        f"{params.oneclass.score} score, threshold {model.threshold:.4g}; on test: AUROC {shown['auroc']}, "
        f"precision {shown['precision']}, recall {shown['recall']}, false-positive rate {shown['false_positive_rate']}"
    )
