"""Typed, validated configuration: `params.yaml` is read once, here, and the code below trusts it.

Overrides use the same dotted keys as `dvc exp run -S`, for example `--set train.lr=1.0e-3`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aelab.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

VARIANTS = ("undercomplete", "sparse", "denoising")


class Section(BaseModel):
    """A params section: unknown keys are errors, values are checked, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class DataConfig(Section):
    """Where the data comes from and how it is split and scaled (the `prepare` stage)."""

    source: Literal["digits", "mnist", "fashion-mnist", "arrays"] = "digits"
    path: str | None = None
    """A folder with the IDX `.gz` files (mnist, fashion-mnist) or a `.npy`/`.npz`/`.csv` file (arrays)."""
    labels_path: str | None = None
    """Labels for a `.npy` array source (optional)."""
    label_column: str | None = None
    """The label column of a `.csv` array source (optional)."""
    image_shape: list[PositiveInt] | None = None
    """[channels, height, width] of an array source whose rows are images (optional)."""
    download: bool = False
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    """Used only for sources without an official test split (digits, arrays)."""
    max_train_samples: PositiveInt | None = None
    """Keep a stratified subset of the training split, for quick runs on large datasets."""
    scaling: Literal["global", "per_feature"] = "global"

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source == "arrays" and not self.path:
            raise ValueError("data.path is required when data.source is 'arrays' (.npy, .npz or .csv)")
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ValueError("data.image_shape must be [channels, height, width]")
        return self


class GaussianNoiseConfig(Section):
    kind: Literal["gaussian"]
    sigma: Annotated[float, Field(gt=0.0)]
    clip: bool = True


class SaltAndPepperConfig(Section):
    kind: Literal["salt_pepper"]
    ratio: Annotated[float, Field(gt=0.0, le=1.0)]


class MaskingConfig(Section):
    kind: Literal["masking"]
    p: Probability


CorruptionConfig = Annotated[GaussianNoiseConfig | SaltAndPepperConfig | MaskingConfig, Field(discriminator="kind")]


class ModelConfig(Section):
    """Settings shared by every variant."""

    activation: Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"] = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    loss: Literal["mse", "bce"] = "bce"


class VariantConfig(Section):
    hidden_dims: Annotated[list[PositiveInt], Field(min_length=1)]
    """Encoder layer widths; the last one is the code size. The decoder mirrors them."""

    @property
    def code_dim(self) -> int:
        return self.hidden_dims[-1]


class UndercompleteConfig(VariantConfig):
    """The code must be smaller than the input (checked once the input size is known)."""


class SparseConfig(VariantConfig):
    rho: Probability = 0.05
    beta: Annotated[float, Field(ge=0.0)] = 1.0


class DenoisingConfig(VariantConfig):
    corruption: Annotated[list[CorruptionConfig], Field(min_length=1)]


class VariantsConfig(Section):
    undercomplete: UndercompleteConfig
    sparse: SparseConfig
    denoising: DenoisingConfig


class TrainConfig(Section):
    max_epochs: PositiveInt = 60
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0.0)] = 2.0e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    early_stopping_patience: PositiveInt | None = None
    accelerator: str = "auto"
    devices: PositiveInt | Literal["auto"] = 1
    strategy: str = "auto"
    num_nodes: PositiveInt = 1
    precision: Literal["32", "bf16-mixed", "16-mixed", "64"] = "32"
    accumulate_grad_batches: PositiveInt = 1
    log_every_n_steps: PositiveInt = 50
    progress_bar: bool = False


class TrackingConfig(Section):
    experiment: Annotated[str, Field(min_length=1)] = "aelab"
    uri: str | None = None
    """MLflow tracking URI; empty means SQLite in the project's `mlruns/` folder."""
    log_model: bool = True


class ReduceConfig(Section):
    pca_components: PositiveInt | None = None
    """PCA code size; empty means the undercomplete variant's code size."""
    formats: Annotated[list[Literal["npz", "csv", "parquet"]], Field(min_length=1)] = ["npz", "csv"]


class EvaluateConfig(Section):
    probe_max_iter: PositiveInt = 2000
    probe_c: Annotated[float, Field(gt=0.0)] = 1.0


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
    """The search space of `aelab tune` over the sparse variant: a range is searched, a plain number is fixed.

    The space defines the tuned variant completely, so the tune stage does not read `variants.sparse`.
    """

    hidden_units: IntRange = IntRange(low=32, high=512, log=True)
    """Width of every encoder layer (the last one is the code); may exceed the input size."""
    depth: IntRange = IntRange(low=1, high=1)
    """Number of encoder layers."""
    rho: FloatRange = FloatRange(low=0.01, high=0.3)
    beta: FloatRange = FloatRange(low=1.0e-3, high=1.0)
    lr: FloatRange | None = None
    """Learning rate; empty means `train.lr`."""

    _fixed = field_validator("hidden_units", "depth", "rho", "beta", "lr", mode="before")(_fixed_as_range)

    @model_validator(mode="after")
    def _valid_values(self) -> TuneSpaceConfig:
        _within("rho", self.rho, 0.0, 1.0)
        _within("beta", self.beta, 0.0, None, low_open=False)
        if self.lr is not None:
            _within("lr", self.lr, 0.0, None)
        return self

    def searched(self) -> list[str]:
        """The names Optuna samples (ranges with low < high); the others are fixed."""
        return [
            name for name in type(self).model_fields if getattr(self, name) is not None and getattr(self, name).searched
        ]


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


TUNE_OBJECTIVES = ("val/mse", "val/loss", "active_units")


class TuneConfig(Section):
    """`aelab tune`: an Optuna search over the sparse variant (see the README's tuning section)."""

    study: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    """Study name; empty means `sparse-<digest of the search settings>`, so a changed search starts a new study."""
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
    space: TuneSpaceConfig = TuneSpaceConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must differ (got {self.objectives})")
        if len(self.objectives) > 1 and self.pruner.kind != "none":
            raise ValueError("Optuna cannot prune a multi-objective search: set tune.pruner.kind to none")
        return self


class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    variants: VariantsConfig
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    reduce: ReduceConfig = ReduceConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tune: TuneConfig = TuneConfig()

    def variant(self, name: str) -> VariantConfig:
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}; allowed: {', '.join(VARIANTS)}")
        return getattr(self.variants, name)

    @property
    def pca_components(self) -> int:
        return self.reduce.pca_components or self.variants.undercomplete.code_dim


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value), the value read as YAML (so `[64, 8]` is a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value with a dotted key, e.g. train.lr=1.0e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({err.__class__.__name__})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set each dotted key in a copy of the raw params; unknown keys are left for validation to reject."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                dotted = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {'.'.join(keys)}: {dotted} is not a section")
            node = child
        node[keys[-1]] = value
    return result


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys a section accepts, found by walking the model along an error location."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return None
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if current is None:
            return None
    return sorted(getattr(current, "model_fields", {}))


def _format_error(source: str, err: ValidationError) -> str:
    messages = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p in {"gaussian", "salt_pepper", "masking"}))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc[:-1])
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            messages.append(f"{dotted}: unknown key{hint}")
        elif item["type"] == "missing":
            messages.append(f"{dotted}: required key is missing")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            messages.append(f"{dotted}: {msg} (got {item.get('input')!r})")
    return f"{source}: " + "; ".join(messages)


def validate_params(raw: Mapping[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: Iterable[str] = ()) -> Params:
    """Read a params file, apply `--set` overrides and validate, with one-line errors."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return validate_params(apply_overrides(raw, overrides), source=str(path))


def flatten(params: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for MLflow: {"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
