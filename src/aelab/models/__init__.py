"""Autoencoder variants: their networks (`networks`, `components`), the LightningModules that train them, and the
portable model file they are saved to.

Names are imported on first use: `aelab.models.networks` (loading a trained model for inference) must not pay for
Lightning, which the LightningModules in `variants` import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aelab.models.networks import load_networks, save_model
    from aelab.models.variants import VARIANT_CLASSES, build_module, load_model, module_options

__all__ = ["VARIANT_CLASSES", "build_module", "load_model", "load_networks", "module_options", "save_model"]

_HOMES = {
    "VARIANT_CLASSES": "aelab.models.variants",
    "build_module": "aelab.models.variants",
    "load_model": "aelab.models.variants",
    "module_options": "aelab.models.variants",
    "load_networks": "aelab.models.networks",
    "save_model": "aelab.models.networks",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aelab.models' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
