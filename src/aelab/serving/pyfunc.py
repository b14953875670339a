"""The MLflow model: a pyfunc that serves codes (or scores) of raw rows, with the bundle folder as its artifact.

It is logged as a "model from code" (`pyfunc_entry.py` is the code MLflow runs to rebuild it): nothing of ours is
cloudpickled, and loading reads the bundle with `torch.load(weights_only=True)`. The serving environment needs
aelab installed (e.g. `mlflow models serve -m URI --env-manager local` from the project's environment).

`predict(rows, params={"output": ...})`: `codes` (default), `score`, `reconstruction`, or `is_anomaly` (one-class
models: 1 anomaly, 0 normal). Tables are matched to the training columns by name.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from aelab.errors import DataError
from aelab.serving.bundle import read_bundle

ENTRY = Path(__file__).with_name("pyfunc_entry.py")
OUTPUTS = ("codes", "score", "reconstruction", "is_anomaly")
RUNTIME_PACKAGES = {
    "torch": "torch",
    "numpy": "numpy",
    "pandas": "pandas",
    "scikit-learn": "sklearn",
    "pydantic": "pydantic",
    "pyyaml": "yaml",
    "pyarrow": "pyarrow",
}
"""The packages serving imports (distribution: module), pinned in the logged model's requirements. Not Lightning:
a model is loaded and run without it (`aelab.serving.model`)."""


class AelabPyfunc(PythonModel):
    """Raw rows in (DataFrame with the training columns, or float32 array), codes or scores out."""

    def load_context(self, context: Any) -> None:
        from aelab.serving.model import load

        self.model = load(context.artifacts["bundle"])

    # Inputs are checked against the logged signature and by the model itself (columns by name, finite values),
    # not by MLflow's type-hint validation. `model_input` is a DataFrame, or a float32 array for models without
    # column names (a tensor signature); the DataFrame hint tells MLflow to take the signature we log.
    _skip_type_hint_validation = True

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        output = (params or {}).get("output", "codes")
        if output not in OUTPUTS:
            raise DataError(f"params.output: {output!r} is not one of {', '.join(OUTPUTS)}")
        if output == "is_anomaly":
            return self.model.predict(model_input)
        return {"codes": self.model.encode, "score": self.model.score, "reconstruction": self.model.reconstruct}[
            output
        ](model_input)


def signature_and_example(bundle_dir: Path) -> tuple[Any, Any]:
    """Signature of the raw inputs (named columns for tables, a float32 tensor otherwise) and the `output` param.

    The example rows are the training minimum and the middle of the training range (the fitted scaling's values).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    bundle = read_bundle(bundle_dir)
    pre = bundle.preprocessing
    scaler = pre.scaler()
    low = np.broadcast_to(scaler.min_, (pre.n_features,)) if scaler else np.zeros(pre.n_features)
    span = np.broadcast_to(scaler.scale_, (pre.n_features,)) if scaler else np.ones(pre.n_features)
    rows = np.stack([low, low + span / 2]).astype(np.float32)
    params = ParamSchema([ParamSpec("output", "string", "codes")])
    if pre.feature_names:
        inputs = Schema([ColSpec("double", name) for name in pre.feature_names])
        example: Any = pd.DataFrame(rows.astype(np.float64), columns=pre.feature_names)
    else:
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, pre.n_features))])
        example = rows
    return ModelSignature(inputs=inputs, params=params), example


def _requirements() -> list[str]:
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def log_bundle_model(bundle_dir: Path, name: str = "model", register_as: str | None = None) -> Any:
    """Log the bundle in `bundle_dir` as a pyfunc model into the active MLflow run (one is started if none is).

    `register_as`: also register it in the model registry under this name (e.g. `aelab-undercomplete`).
    Returns MLflow's `ModelInfo` (its `model_uri` loads the model).
    """
    import mlflow

    signature, example = signature_and_example(Path(bundle_dir))
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(ENTRY),
        artifacts={"bundle": str(bundle_dir)},
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(),
        registered_model_name=register_as,
    )
