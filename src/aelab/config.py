"""Typed, validated configuration: `params.yaml` is read once, here, and the code below trusts it.

Overrides use the same dotted keys as `dvc exp run -S`, for example `--set train.lr=1.0e-3`.
Every key has a default equal to the shipped `params.yaml`, so `--params mine.yaml` may hold only the keys that
differ: the file is merged over the defaults section by section.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aelab.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

VARIANTS = ("undercomplete", "sparse", "denoising", "stacked", "conv", "stacked_conv")
CONV_VARIANTS = ("conv", "stacked_conv")


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
    scaling: Literal["auto", "global", "per_feature"] = "auto"
    """Min-max scaling fitted on train: `global` (one min and max for all features), `per_feature`, or `auto`:
    global for images, per feature for tables. Image values are clipped to [0, 1]; table values are not, so a
    value outside the training range keeps its distance (see `aelab.data.scaling`)."""

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source == "arrays" and not self.path:
            raise ValueError("data.path is required when data.source is 'arrays' (.npy, .npz or .csv)")
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ValueError("data.image_shape must be [channels, height, width]")
        return self


class CorruptionSection(Section):
    """A corruption kind's settings; `level_key` names the field that sets its strength (used in metric names)."""

    level_key: ClassVar[str]

    @property
    def level(self) -> float:
        return float(getattr(self, self.level_key))


class GaussianNoiseConfig(CorruptionSection):
    level_key: ClassVar[str] = "sigma"
    kind: Literal["gaussian"]
    sigma: Annotated[float, Field(gt=0.0)]
    clip: bool = True


class SaltAndPepperConfig(CorruptionSection):
    level_key: ClassVar[str] = "ratio"
    kind: Literal["salt_pepper"]
    ratio: Annotated[float, Field(gt=0.0, le=1.0)]


class MaskingConfig(CorruptionSection):
    level_key: ClassVar[str] = "p"
    kind: Literal["masking"]
    p: Probability


CorruptionConfig = Annotated[GaussianNoiseConfig | SaltAndPepperConfig | MaskingConfig, Field(discriminator="kind")]
"""Adding a corruption kind: a settings class here and its `Corruption` class in `aelab.data.corruptions`."""
CORRUPTION_KINDS = tuple(
    get_args(kind.model_fields["kind"].annotation)[0] for kind in get_args(get_args(CorruptionConfig)[0])
)


class ModelConfig(Section):
    """Settings shared by every variant."""

    activation: Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"] = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    loss: Literal["mse", "bce"] = "bce"


class SparsityConfig(Section):
    """The sparse variant's KL penalty, as an option of the layered variants (sigmoid code units)."""

    rho: Probability = 0.05
    beta: Annotated[float, Field(ge=0.0)] = 1.0


class VariantConfig(Section):
    """Fields every variant has, so code never asks which variant it holds; a variant that cannot use one of them
    rejects a value other than the default, naming the key."""

    takes_corruption: ClassVar[bool] = False
    layered: ClassVar[bool] = False
    """Built as a stack of layers (stacked, conv): takes an optional sparsity penalty on the code."""
    pretrainable: ClassVar[bool] = False

    max_epochs: PositiveInt | None = None
    """Epochs of (end-to-end) training; empty means train.max_epochs."""
    corruption: list[CorruptionConfig] = []
    """Corrupt the input (denoising), also in every pre-training phase; empty means none."""
    pretrain: bool = False
    """Layered variants: train each layer as a shallow autoencoder on the frozen layers below before fine-tuning."""
    pretrain_epochs: PositiveInt = 5
    """Epochs per pre-trained layer."""
    compare_scratch: bool = False
    """Also train the same network from scratch for the same total epochs and record both in metrics.json."""
    sparsity: SparsityConfig | None = None
    """Layered variants: a KL sparsity penalty on the code (stacked: on every layer during pre-training)."""

    @model_validator(mode="after")
    def _abilities(self) -> VariantConfig:
        if self.corruption and not self.takes_corruption:
            raise ValueError("corruption: this variant trains on clean inputs; use the denoising variant")
        if self.sparsity is not None and not self.layered:
            raise ValueError("sparsity: applies to layered variants (stacked, conv); use the sparse variant")
        if (self.pretrain or self.compare_scratch) and not self.pretrainable:
            raise ValueError(
                "pretrain / compare_scratch: greedy pre-training needs a layered variant (stacked, stacked_conv)"
            )
        return self


class DenseConfig(VariantConfig):
    hidden_dims: Annotated[list[PositiveInt], Field(min_length=1)]
    """Encoder layer widths; the last one is the code size. The decoder mirrors them."""

    @property
    def code_dim(self) -> int:
        return self.hidden_dims[-1]


class UndercompleteConfig(DenseConfig):
    """The code must be smaller than the input (checked once the input size is known)."""


class SparseConfig(DenseConfig):
    rho: Probability = 0.05
    beta: Annotated[float, Field(ge=0.0)] = 1.0


class DenoisingConfig(DenseConfig):
    takes_corruption: ClassVar[bool] = True
    corruption: Annotated[list[CorruptionConfig], Field(min_length=1)]


class StackedConfig(DenseConfig):
    """A deep MLP, pre-trained greedily layer by layer, then fine-tuned end to end."""

    takes_corruption: ClassVar[bool] = True
    layered: ClassVar[bool] = True
    pretrainable: ClassVar[bool] = True
    pretrain: bool = True


class ConvBlockShape(Section):
    """A conv block's settings other than its width (what `tune` keeps fixed while it searches the widths)."""

    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    pool: PositiveInt = 1
    """Max-pool factor after the convolution (1: no pooling)."""
    norm: Literal["none", "batch", "instance"] = "none"
    activation: Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"] | None = None
    """Empty means model.activation."""


class ConvBlockConfig(ConvBlockShape):
    """One encoder block: conv (padding kernel // 2) -> norm -> activation -> max-pool; the decoder mirrors it."""

    channels: PositiveInt


class ConvConfig(VariantConfig):
    """A convolutional encoder (image data only), a dense bottleneck code and a mirrored decoder."""

    takes_corruption: ClassVar[bool] = True
    layered: ClassVar[bool] = True
    blocks: Annotated[list[ConvBlockConfig], Field(min_length=1)]
    code_dim: PositiveInt
    decoder: Literal["transposed", "upsample"] = "transposed"
    """Transposed convolutions, or nearest upsampling followed by a convolution."""


class StackedConvConfig(ConvConfig):
    """The convolutional variant with its blocks (and the bottleneck) pre-trained greedily."""

    pretrainable: ClassVar[bool] = True
    pretrain: bool = True


_DIGITS_BLOCKS = [ConvBlockConfig(channels=8, stride=2), ConvBlockConfig(channels=16, stride=2)]


class VariantsConfig(Section):
    undercomplete: UndercompleteConfig = UndercompleteConfig(hidden_dims=[256, 128, 12])
    sparse: SparseConfig = SparseConfig(hidden_dims=[256], rho=0.05, beta=0.5)
    denoising: DenoisingConfig = DenoisingConfig(
        hidden_dims=[256, 128, 12], corruption=[GaussianNoiseConfig(kind="gaussian", sigma=0.2)]
    )
    stacked: StackedConfig = StackedConfig(hidden_dims=[48, 24, 12], max_epochs=20, compare_scratch=True)
    conv: ConvConfig = ConvConfig(blocks=_DIGITS_BLOCKS, code_dim=12, max_epochs=20)
    stacked_conv: StackedConvConfig = StackedConvConfig(
        blocks=_DIGITS_BLOCKS, code_dim=12, pretrain_epochs=3, max_epochs=15
    )


def _lightning_names(kind: Literal["accelerator", "strategy"]) -> list[str]:
    """The names `lightning.Trainer` accepts: its registry plus the plain names it resolves itself."""
    if kind == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        return sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    from lightning.pytorch.strategies import StrategyRegistry

    return sorted({"auto", *StrategyRegistry.available_strategies()})


def _known_to_lightning(kind: Literal["accelerator", "strategy"]):
    """A field validator: an unknown trainer string fails here, not after the data is loaded."""

    def check(value: str) -> str:
        name = value.lower() if kind == "strategy" else value  # Lightning lower-cases strategies only
        if name != "auto" and name not in (allowed := _lightning_names(kind)):
            suffix = "_find_unused_parameters_"
            shown = [n for n in allowed if suffix not in n]
            extra = f" (ddp ones also with {suffix}true/false)" if len(shown) < len(allowed) else ""
            raise ValueError(f"unknown {kind}; allowed: {', '.join(shown)}{extra}")
        return value

    return check


class TrainConfig(Section):
    """Trainer settings. `batch_size` is the global batch per step: under DDP each of the world-size processes
    takes `batch_size / world_size` rows (it must divide), so results do not depend on the number of devices."""

    max_epochs: PositiveInt = 80
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0.0)] = 2.0e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr_schedule: Literal["none", "cosine"] = "none"
    """Per-epoch learning rate: `cosine` falls from `lr` towards zero over the epochs after the warm-up."""
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    """Epochs over which the learning rate first rises linearly to `lr` (0: start at `lr`)."""
    early_stopping_patience: PositiveInt | None = None
    accelerator: str = "auto"
    devices: PositiveInt | Literal["auto"] = 1
    strategy: str = "auto"
    num_nodes: PositiveInt = 1
    precision: Literal["32", "bf16-mixed", "16-mixed", "64"] = "32"
    accumulate_grad_batches: PositiveInt = 1
    log_every_n_steps: PositiveInt = 50
    progress_bar: bool | None = None
    """Lightning's progress bar; empty: on when stderr is a terminal, off in CI and when output goes to a pipe."""
    compile: bool = False
    """Run the LightningModule through `torch.compile` (needs a C compiler on CPU; pays off on GPUs)."""
    data_on_device: bool = True
    """Keep the splits resident on the training device (GPU memory on a GPU): no host-device copy per batch."""
    check_finite_every_n_steps: PositiveInt = 50
    """How often the running training loss is checked for NaN/inf (each check waits for a GPU)."""
    resume: bool = True
    """Resume an interrupted training from its last epoch-end checkpoint and continue its MLflow run."""

    _accelerator = field_validator("accelerator")(_known_to_lightning("accelerator"))
    _strategy = field_validator("strategy")(_known_to_lightning("strategy"))


class TrackingConfig(Section):
    experiment: Annotated[str, Field(min_length=1)] = "aelab"
    uri: str | None = None
    """MLflow tracking URI; empty means SQLite in the project's `mlruns/` folder."""
    log_model: bool = True
    """Log each trained variant as an MLflow pyfunc model (codes of raw rows; `params={"output": "score"}`)."""
    register_model: bool = False
    """Also register it in the MLflow model registry as `aelab-<variant>`."""


class ReduceConfig(Section):
    pca_components: PositiveInt | None = None
    """PCA code size; empty means the undercomplete variant's code size."""
    formats: Annotated[list[Literal["npz", "csv", "parquet"]], Field(min_length=1)] = ["npz", "csv"]


class TsneConfig(Section):
    """The 2-D map of the test codes (skipped where the code size is 2: the codes are drawn as they are)."""

    max_samples: PositiveInt = 1000
    """A seeded random subset of the test split, so the cost stays bounded on large datasets."""
    perplexity: Annotated[float, Field(gt=0.0)] = 30.0
    max_iter: Annotated[int, Field(ge=250)] = 500


class OneClassConfig(Section):
    """One-class classification: per class, a model trained on that class only scores every test sample."""

    variant: Literal[VARIANTS] = "undercomplete"
    """Any variant, trained as the pipeline trains it (stacked ones pre-trained greedily first)."""
    classes: list[int | str] | None = None
    """The normal classes to run, each on its own, by label value (`[benign]`, `[3]`); empty means every class
    of the training labels."""
    hidden_dims: list[PositiveInt] | None = None
    """Encoder widths of the per-class models of a fully connected variant; empty means the variant's own.
    Convolutional variants take their blocks and `code_dim` from `variants.<variant>`."""
    max_epochs: PositiveInt = 30
    score: Literal["mse", "standardized"] = "mse"
    """The anomaly score (for the autoencoder and PCA alike): mse, the mean squared reconstruction error; or
    standardized, each feature's squared error over its mean on the normal training data (shrunk toward the mean
    over features), so features the normal class itself reconstructs poorly count less."""
    threshold_percentile: Annotated[float, Field(gt=0.0, le=100.0)] = 95.0
    """The anomaly threshold: this percentile of the scores of the normal-only validation samples."""
    pca_components: PositiveInt | None = None
    """Size of the PCA baseline per class; empty means the per-class model's code size."""
    roc_points: Annotated[int, Field(ge=3)] = 101
    """False-positive-rate grid on which the per-class ROC curves are averaged for the DVC plot."""

    @model_validator(mode="after")
    def _hidden_dims_for_dense_variants(self) -> OneClassConfig:
        if self.hidden_dims and self.variant in CONV_VARIANTS:
            raise ValueError(
                f"hidden_dims applies to fully connected variants; {self.variant} takes its blocks and code_dim "
                f"from variants.{self.variant}: leave evaluate.oneclass.hidden_dims empty"
            )
        return self


class DenoisingEvalConfig(Section):
    """Corruptions applied to the clean test data; each one is scored separately."""

    corruptions: list[CorruptionConfig] = Field(
        default_factory=lambda: [
            GaussianNoiseConfig(kind="gaussian", sigma=0.1),
            GaussianNoiseConfig(kind="gaussian", sigma=0.3),
            SaltAndPepperConfig(kind="salt_pepper", ratio=0.1),
            MaskingConfig(kind="masking", p=0.3),
        ]
    )
    grid_samples: PositiveInt = 8


class SparsityEvalConfig(Section):
    """Diagnostics of sigmoid code units (variants with a target `rho`)."""

    active_threshold: Probability = 0.1
    """A unit counts as active on a sample above this activation; dead: never active, always-on: always."""
    max_features: PositiveInt = 64
    """How many first-layer weight vectors to draw as images."""


class EvaluateConfig(Section):
    probe_max_iter: PositiveInt = 2000
    probe_c: Annotated[float, Field(gt=0.0)] = 1.0
    knn_neighbors: PositiveInt = 5
    num_threads: PositiveInt | None = 1
    """CPU threads for torch and BLAS/OpenMP: the default digits models are so small that one thread is
    several times faster than two fighting over shared cores; empty keeps the libraries' defaults."""
    tsne: TsneConfig = TsneConfig()
    oneclass: OneClassConfig = OneClassConfig()
    denoising: DenoisingEvalConfig = DenoisingEvalConfig()
    sparsity: SparsityEvalConfig = SparsityEvalConfig()


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
        """A journal path is relative to the project root and may not leave it (`../x.journal`, `/tmp/x.journal`)."""
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
