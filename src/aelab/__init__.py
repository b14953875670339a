"""aelab: an autoencoder lab built on Lightning, DVC, Optuna and MLflow.

`aelab.load("data/models/undercomplete")` returns a trained model ready for new raw data (`encode`, `reconstruct`,
`score`, `predict`); it is imported on first use, so `import aelab` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from aelab.serving.model import load


def __getattr__(name: str) -> Any:
    if name == "load":
        from aelab.serving.model import load

        return load
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")
