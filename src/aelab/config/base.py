"""The base of every params section, and the names every layer shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PARAMS = Path("params.yaml")

VARIANTS = ("undercomplete", "sparse", "denoising", "stacked", "conv", "stacked_conv")
CONV_VARIANTS = ("conv", "stacked_conv")


class Section(BaseModel):
    """A params section: unknown keys are errors, values are checked, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
