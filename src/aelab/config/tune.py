"""The search `aelab tune` runs: its space, sampler, pruner and budget."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from aelab.config.base import PositiveInt, Probability, Section
from aelab.config.model import ConvBlockShape


class IntRange(Section):
    """An integer search range, both ends included (`log: true` samples on a log scale)."""

    low: PositiveInt
    high: PositiveInt
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"empty or inverted range: low {self.low} > high {self.high}")
        return self

    @property
    def searched(self) -> bool:
        return self.low < self.high


class FloatRange(Section):
    """A float search range (`log: true`, the default, samples log-uniformly and needs low > 0)."""

    low: float
    high: float
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"empty or inverted range: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got low {self.low})")
        return self

    @property
    def searched(self) -> bool:
        return self.low < self.high


def _fixed_as_range(value: Any) -> Any:
    """A plain number in the search space is a fixed value: the range [value, value]."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"low": value, "high": value, "log": False}
    return value


def _within(name: str, value: FloatRange, low: float, high: float | None, low_open: bool = True) -> None:
    """Reject fixed values or ranges that leave the parameter's valid interval."""
    for end in (value.low, value.high):
        if (end <= low if low_open else end < low) or (high is not None and end >= high):
            bound = f"({low}, {high})" if high is not None else f"{'>' if low_open else '>='} {low}"
            raise ValueError(f"{name} must lie in {bound} (got {end})")


class TuneSpaceConfig(Section):
    """The search space of `aelab tune`: a range is searched, a plain number is fixed.

    The space defines the tuned variant completely, so the tune stage does not read `variants`.
    """

    hidden_units: IntRange = IntRange(low=32, high=512, log=True)
    """sparse: width of every encoder layer (the last one is the code), may exceed the input size; conv: the code
    size."""
    depth: IntRange = IntRange(low=1, high=1)
    """sparse: number of encoder layers."""
    rho: FloatRange = FloatRange(low=0.01, high=0.3)
    beta: FloatRange = FloatRange(low=1.0e-3, high=1.0)
    lr: FloatRange | None = None
    """Learning rate; empty means `train.lr`."""
    blocks: IntRange = IntRange(low=2, high=2)
    """conv: number of conv blocks."""
    channels: IntRange = IntRange(low=8, high=8)
    """conv: channels of the first block; each further block doubles them."""
    block: ConvBlockShape = ConvBlockShape(stride=2)
    """conv: kernel, stride, pooling, normalisation and activation of every block."""
    decoder: Literal["transposed", "upsample"] = "transposed"
    """conv: the decoder's way back up."""

    _fixed = field_validator("hidden_units", "depth", "rho", "beta", "lr", "blocks", "channels", mode="before")(
        _fixed_as_range
    )

    @model_validator(mode="after")
    def _valid_values(self) -> TuneSpaceConfig:
        _within("rho", self.rho, 0.0, 1.0)
        _within("beta", self.beta, 0.0, None, low_open=False)
        if self.lr is not None:
            _within("lr", self.lr, 0.0, None)
        return self

    def searched(self) -> list[str]:
        """The names Optuna samples (ranges with low < high); the others are fixed."""
        return [name for name in type(self).model_fields if getattr(getattr(self, name), "searched", False)]


class TuneSamplerConfig(Section):
    kind: Literal["tpe", "random"] = "tpe"
    seed: Annotated[int, Field(ge=0)] | None = None
    """Empty means the top-level `seed`."""
    n_startup_trials: Annotated[int, Field(ge=0)] = 5
    """TPE: random trials before the model-based search starts."""


class TunePrunerConfig(Section):
    kind: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: Annotated[int, Field(ge=0)] = 3
    """median: trials that are never pruned, to build up the median."""
    n_warmup_steps: Annotated[int, Field(ge=0)] = 2
    """median: epochs of each trial that are never pruned."""
    min_resource: PositiveInt = 1
    """hyperband: the fewest epochs a trial gets."""
    reduction_factor: Annotated[int, Field(ge=2)] = 3


TUNABLE = ("sparse", "conv")
"""What `aelab tune` searches: dense layers with a sparse code, or conv blocks with a sparse code (image data)."""
SPACE_OF = {"sparse": ("depth",), "conv": ("blocks", "channels")}
"""The ranges that only one tunable variant has."""


class TuneConfig(Section):
    """`aelab tune`: an Optuna search over the sparse or the conv variant (see the README's tuning section)."""

    variant: Literal[TUNABLE] = "sparse"
    """sparse: hidden_units, depth, rho, beta, lr; conv: blocks, channels, hidden_units (the code), rho, beta, lr."""
    study: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    """Study name; empty means `<variant>-<digest of the search settings>`: a changed search starts a new study."""
    storage: str | None = None
    """Optuna storage: empty means a journal file `<project>/data/studies/<study>.journal`; also any RDB URL
    (postgresql://..., mysql://..., sqlite:///... for one worker) or a path ending in `.journal`."""
    n_trials: PositiveInt = 10
    """Budget: finished (complete + pruned) trials of the study, counting those of earlier runs."""
    timeout: Annotated[float, Field(gt=0.0)] | None = None
    """Seconds after which no new trial starts (per `aelab tune` process)."""
    max_epochs: PositiveInt = 6
    """Epochs per trial (the tuned variant itself trains for `train.max_epochs`)."""
    objectives: Annotated[list[Literal["val/mse", "val/loss", "active_units"]], Field(min_length=1, max_length=2)] = [
        "val/mse"
    ]
    """All minimised. One: single-objective (pruned); two, e.g. [val/mse, active_units]: a Pareto front."""
    active_threshold: Probability = 0.5
    """A code unit counts as active for a sample when its sigmoid activation exceeds this."""
    sampler: TuneSamplerConfig = TuneSamplerConfig()
    pruner: TunePrunerConfig = TunePrunerConfig()
    space: TuneSpaceConfig = TuneSpaceConfig(lr=FloatRange(low=1.0e-3, high=3.0e-2))

    @field_validator("storage")
    @classmethod
    def _journal_inside_project(cls, value: str | None) -> str | None:
        """A journal path is relative to the project root and may not leave it (`../x.journal` or an absolute path)."""
        if value is None or "://" in value or not value.endswith(".journal"):
            return value
        normal = os.path.normpath(value)
        if os.path.isabs(normal) or normal == ".." or normal.startswith(f"..{os.sep}"):
            raise ValueError("a journal path must stay inside the project: relative, without '..' leaving it")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must differ (got {self.objectives})")
        if len(self.objectives) > 1 and self.pruner.kind != "none":
            raise ValueError("Optuna cannot prune a multi-objective search: set tune.pruner.kind to none")
        for variant, names in SPACE_OF.items():
            if variant != self.variant and (wrong := [n for n in names if getattr(self.space, n).searched]):
                raise ValueError(
                    f"space.{wrong[0]} is searched for tune.variant {variant}, not {self.variant}: give it one value"
                )
        return self
