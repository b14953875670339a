"""Label values and the integer codes the pipeline trains and evaluates with.

Codes are positions in `label_names` (saved in `meta.json`): the distinct label values in sorted order, so
integer labels 0..k-1 (digits, MNIST) keep their values as codes and string labels get 0, 1, ... alphabetically.
Wherever a user names a class (`oneclass.normal`, `evaluate.oneclass.classes`) they write the label value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from aelab.errors import ConfigError, DataError


def _plain(value: Any) -> int | float | str:
    """A JSON-ready label value (numpy scalars become Python ones; integral floats stay floats)."""
    value = value.item() if isinstance(value, np.generic) else value
    return value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def encode_labels(y: np.ndarray, source: str) -> tuple[np.ndarray, list[int | float | str]]:
    """Codes (int64, position in the names) and the sorted distinct values; missing labels are a `DataError`."""
    y = np.asarray(y)
    if y.dtype.kind == "O":
        missing = [i for i, v in enumerate(y) if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise DataError(f"{source}: {len(missing)} rows have no label (first row {missing[0]})")
        y = y.astype(str)
    elif y.dtype.kind == "f" and np.isnan(y).any():
        raise DataError(f"{source}: {int(np.isnan(y).sum())} rows have no label (first row {np.isnan(y).argmax()})")
    names, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [_plain(v) for v in names]


def label_names_of(meta: dict[str, Any], y: np.ndarray | None) -> list[Any]:
    """The saved names; data prepared before names were saved has integer codes that are their own values."""
    names = meta.get("label_names")
    if names is not None:
        return list(names)
    return list(range(int(y.max()) + 1)) if y is not None and len(y) else []


def label_codes(values: Iterable[Any], names: Sequence[Any], key: str) -> list[int]:
    """Label values -> codes; `3` and `"3"` name the same label; an unknown one lists the allowed values."""
    by_text = {str(name): code for code, name in enumerate(names)}
    codes = []
    for value in values:
        if value in names:
            codes.append(list(names).index(value))
        elif str(value) in by_text:
            codes.append(by_text[str(value)])
        else:
            allowed = ", ".join(str(n) for n in names)
            raise ConfigError(f"{key}: unknown label {value!r}; allowed: {allowed}")
    return codes
