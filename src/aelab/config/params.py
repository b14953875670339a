"""The whole params file: its sections, validated once with one-line errors, overrides and partial files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from aelab.config.base import CONV_VARIANTS, DEFAULT_PARAMS, VARIANTS, PositiveInt, Probability, Section
from aelab.config.model import CORRUPTION_KINDS, DataConfig, ModelConfig, VariantConfig, VariantsConfig
from aelab.config.run import HEAD_PARTS, EvaluateConfig, ReduceConfig, TrackingConfig, TrainConfig, score_parts
from aelab.config.tune import TuneConfig
from aelab.errors import ConfigError


class PipelineConfig(Section):
    """What `dvc repro` runs: dvc.yaml's train and reduce stages loop over `variants` (`foreach`)."""

    variants: Annotated[list[Literal[VARIANTS]], Field(min_length=1)] = list(VARIANTS)
    """The variants trained, reduced and evaluated; the conv ones need image data (a table takes the others)."""

    @field_validator("variants")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each variant once (got {value})")
        return value


def check_variants_fit_data(
    variants: Iterable[str], image_shape: Iterable[int] | None, key: str = "pipeline.variants"
) -> None:
    """Image-only variants on data without an image shape: one line naming the key that listed them."""
    image_only = [v for v in variants if v in CONV_VARIANTS]
    if image_only and image_shape is None:
        mlp = [v for v in VARIANTS if v not in CONV_VARIANTS]
        raise ConfigError(
            f"{key}: {', '.join(image_only)} {'needs' if len(image_only) == 1 else 'need'} image data, "
            "and this data has no image shape "
            f"(data.image_shape); allowed: {', '.join(mlp)}"
        )


class OneClassModelConfig(Section):
    """`aelab oneclass`: one model trained on the normal rows, kept with its anomaly threshold."""

    normal: Annotated[list[int | str], Field(min_length=1)] | None = None
    """The normal label value(s), e.g. [benign] or [0]; every other label is an anomaly."""
    variant: Literal[VARIANTS] = "undercomplete"
    """Trained as the pipeline trains it (stacked variants pre-trained greedily first)."""
    hidden_dims: list[PositiveInt] | None = None
    """Encoder widths of a fully connected variant; empty means `variants.<variant>.hidden_dims`."""
    max_epochs: PositiveInt = 30
    score: Literal["mse", "standardized", "combined"] = "mse"
    """mse: the mean squared reconstruction error; standardized: each feature's squared error over its mean on
    the normal training rows (features the normal rows themselves reconstruct poorly count less); combined: the
    mse plus the code's Mahalanobis distance from the normal training codes, each over its median on the normal
    validation rows. The same scores as `evaluate.oneclass.score`, which compares them on every class."""
    false_positive_rate: Probability = 0.05
    """The threshold is the (1 - rate) quantile of the scores of the normal validation rows: about this share
    of normal rows is flagged."""

    @model_validator(mode="after")
    def _hidden_dims_for_dense_variants(self) -> OneClassModelConfig:
        if self.hidden_dims and self.variant in CONV_VARIANTS:
            raise ValueError(
                f"hidden_dims applies to fully connected variants; {self.variant} takes its blocks and code_dim "
                f"from variants.{self.variant}: leave oneclass.hidden_dims empty"
            )
        return self


class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pipeline: PipelineConfig = PipelineConfig()
    variants: VariantsConfig = VariantsConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    reduce: ReduceConfig = ReduceConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tune: TuneConfig = TuneConfig()
    oneclass: OneClassModelConfig = OneClassModelConfig()

    @model_validator(mode="after")
    def _transformation_score_needs_a_head(self) -> Params:
        oneclass = self.evaluate.oneclass
        if set(score_parts(oneclass.score)) & set(HEAD_PARTS):
            cfg = getattr(self.variants, oneclass.variant)
            if getattr(cfg, "transformations", None) is None:
                raise ValueError(
                    f"evaluate.oneclass.score={oneclass.score} reads a transformation head, which "
                    f"evaluate.oneclass.variant={oneclass.variant} does not have: use a conv variant with "
                    "variants.<variant>.transformations set (e.g. {weight: 1.0})"
                )
        return self

    def variant(self, name: str) -> VariantConfig:
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r}; allowed: {', '.join(VARIANTS)}")
        return getattr(self.variants, name)

    def derive(self, changes: Mapping[str, Any], source: str) -> Params:
        """A validated copy with a nested fragment of changes merged in (a trial's values, a baseline's settings);
        `source` names where the changes come from in error messages."""
        return validate_params(merge_over(self.model_dump(mode="json"), changes), source=source)

    @property
    def pca_components(self) -> int:
        return self.reduce.pca_components or self.variants.undercomplete.code_dim


def merge_over(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` laid over `base`, section by section; lists and plain values replace what they override."""
    merged = dict(base)
    for key, value in update.items():
        nested = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = merge_over(merged[key], value) if nested else value
    return merged


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
        current = _section_class(fields[part].annotation)
        if current is None:
            return None
    return sorted(getattr(current, "model_fields", {}))


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The one section class in an annotation, also inside `list[...]` or `... | None` (conv blocks, sparsity)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [c for c in map(_section_class, get_args(annotation)) if c is not None]
    return found[0] if len(found) == 1 else None


def _format_error(source: str, err: ValidationError) -> str:
    messages = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p in CORRUPTION_KINDS))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc[:-1])
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            messages.append(f"{dotted}: unknown key{hint}")
        elif item["type"] == "missing":
            messages.append(f"{dotted}: required key is missing")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            given = item.get("input")  # a whole section's content says nothing a reader needs
            messages.append(f"{dotted}: {msg}" + ("" if isinstance(given, Mapping) else f" (got {given!r})"))
    return f"{source}: " + "; ".join(messages)


def validate_params(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Validate params merged over the defaults, so a file may hold only the keys it changes."""
    try:
        return Params.model_validate(merge_over(Params().model_dump(mode="json"), raw))
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
