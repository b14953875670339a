"""How it is trained, tracked, reduced and evaluated: the train, tracking, reduce and evaluate sections."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from aelab.config.base import CONV_VARIANTS, VARIANTS, PositiveInt, Probability, Section
from aelab.config.model import CorruptionConfig, GaussianNoiseConfig, MaskingConfig, SaltAndPepperConfig


def _lightning_names(kind: Literal["accelerator", "strategy"]) -> list[str]:
    """The names `lightning.Trainer` accepts: its registry plus the plain names it resolves itself."""
    if kind == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        return sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    from lightning.pytorch.strategies import StrategyRegistry

    return sorted({"auto", *StrategyRegistry.available_strategies()})


BUILT_IN = {
    "accelerator": {"auto", "cpu", "cuda", "gpu", "mps"},
    "strategy": {"auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "single_device"},
}
"""Names every Lightning version accepts: validating them does not import Lightning (seconds per process, paid
by every stage that reads params, including `reduce`, which otherwise never needs it)."""


def _known_to_lightning(kind: Literal["accelerator", "strategy"]):
    """A field validator: an unknown trainer string fails here, not after the data is loaded."""

    def check(value: str) -> str:
        name = value.lower() if kind == "strategy" else value  # Lightning lower-cases strategies only
        if name not in BUILT_IN[kind] and name not in (allowed := _lightning_names(kind)):
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
    steps_per_call: PositiveInt = 8
    """Optimiser steps per Lightning training step (as Keras' `steps_per_execution`): the same steps on the same
    batches in the same order, with Lightning's fixed cost per step (hooks, loop bookkeeping) paid once per call;
    small networks train up to a third faster. Cannot be combined with `accumulate_grad_batches` above 1."""
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

    @model_validator(mode="after")
    def _one_way_to_group_batches(self) -> TrainConfig:
        if self.steps_per_call > 1 and self.accumulate_grad_batches > 1:
            raise ValueError(
                f"steps_per_call ({self.steps_per_call}) takes one optimiser step per batch and cannot be combined "
                f"with accumulate_grad_batches ({self.accumulate_grad_batches}); set one of them to 1"
            )
        return self


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


ScorePart = Literal["mse", "standardized", "mahalanobis", "features", "sap", "nap", "transformations", "head_features"]
"""One anomaly score of `evaluate.oneclass.score`; a list of them is added (see `OneClassConfig.score`)."""
ScoreName = Literal[ScorePart, "combined", "transformations_mse", "transformations_features"]
HEAD_PARTS = ("transformations", "head_features")
"""The parts that read a conv model's transformation head."""
COMPOSITE_SCORES: dict[str, tuple[str, ...]] = {
    "combined": ("mse", "mahalanobis"),
    "transformations_mse": ("mse", "transformations"),
    "transformations_features": ("transformations", "features", "mahalanobis"),
}


def score_parts(score: str | list[str]) -> tuple[str, ...]:
    """The parts a score adds: a named composite's, a list's, or the one part it names."""
    if isinstance(score, str):
        return COMPOSITE_SCORES.get(score, (score,))
    return tuple(score)


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
    score: ScoreName | Annotated[list[ScorePart], Field(min_length=1)] = "mse"
    """The anomaly score (for the autoencoder and PCA alike): mse, the mean squared reconstruction error;
    standardized, each feature's squared error over its mean on the normal training data (shrunk toward the mean
    over features), so features the normal class itself reconstructs poorly count less; mahalanobis, the code's
    distance from the normal training codes (a Gaussian fitted to them); features, the same distance for the
    encoder's activations under the code (a conv model's last feature map; for PCA the input); sap and nap,
    RAPP's reconstruction along the projection pathway (the input and its reconstruction fed through the
    encoder, every layer's activations compared), summed or whitened on the normal training rows; and, for a conv
    variant with variants.<variant>.transformations, transformations, its transformation head's score (Golan and
    El-Yaniv: how unsure it is which rotation or flip was applied) and head_features, the distance of the head's
    hidden layer on the image as it is. A list of these, e.g. [mse, mahalanobis, head_features], adds them, each
    over its median on the normal validation rows; combined is [mse, mahalanobis], transformations_mse
    [mse, transformations] and transformations_features [transformations, features, mahalanobis]. A score that
    reads the head scores PCA, which has none, by its mse."""
    threshold_percentile: Annotated[float, Field(gt=0.0, le=100.0)] = 95.0
    """The anomaly threshold: this percentile of the scores of the normal-only validation samples."""
    pca_components: PositiveInt | None = None
    """Size of the PCA baseline per class; empty means the per-class model's code size."""
    roc_points: Annotated[int, Field(ge=3)] = 101
    """False-positive-rate grid on which the per-class ROC curves are averaged for the DVC plot."""

    @field_validator("score", mode="before")
    @classmethod
    def _known_score(cls, value: object) -> object:
        """One line naming what is allowed, instead of an error for each branch of the union."""
        parts, names = get_args(ScorePart), get_args(ScoreName)
        if isinstance(value, str) and value in names:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v in parts for v in value):
            return value
        raise ValueError(f"allowed: one of {', '.join(names)}, or a non-empty list of {', '.join(parts)}")

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
