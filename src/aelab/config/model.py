"""What is trained: the data, the shared model settings, the corruptions and each variant's own settings."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from aelab.config.base import PositiveInt, Probability, Section


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


class NeighboursConfig(Section):
    """UMAP's neighbourhood loss on the codes, added to the reconstruction loss (parametric UMAP with a decoder).

    Each training row is pulled towards one of its `k` nearest training rows (Euclidean, in input space) in the code
    space and pushed away from `negatives` random rows of its batch, with UMAP's curve for `min_dist`. Worth it for
    codes meant to be looked at or searched by neighbours (2-D maps, k-NN on the code); it costs reconstruction."""

    k: PositiveInt = 15
    weight: Annotated[float, Field(gt=0.0)] = 1.0
    negatives: PositiveInt = 5
    min_dist: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1


class UndercompleteConfig(DenseConfig):
    """The code must be smaller than the input (checked once the input size is known)."""

    neighbours: NeighboursConfig | None = None
    """e.g. {k: 15, weight: 1.0}: keep input-space neighbours together in the code (see `NeighboursConfig`)."""


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


class TransformationsConfig(Section):
    """A head on the code that tells which of eight rotations and flips was applied to an image, trained together
    with the reconstruction (Golan and El-Yaniv, 2018): what `evaluate.oneclass.score: transformations` reads."""

    weight: Annotated[float, Field(gt=0.0)] = 1.0
    """The head's cross-entropy, added to the reconstruction loss with this weight."""
    shift: Annotated[int, Field(ge=0)] = 0
    """Pixels: with a shift, each rotation and flip also comes moved up, down, sideways and diagonally by it,
    72 transformations in all (Golan and El-Yaniv's set; they shift 32-pixel images by 8)."""


class ConvConfig(VariantConfig):
    """A convolutional encoder (image data only), a dense bottleneck code and a mirrored decoder."""

    takes_corruption: ClassVar[bool] = True
    layered: ClassVar[bool] = True
    blocks: Annotated[list[ConvBlockConfig], Field(min_length=1)]
    code_dim: PositiveInt
    decoder: Literal["transposed", "upsample"] = "transposed"
    """Transposed convolutions, or nearest upsampling followed by a convolution."""
    transformations: TransformationsConfig | None = None
    """e.g. {weight: 1.0}: a transformation-prediction head on the code (square images only)."""


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
    conv: ConvConfig = ConvConfig(
        blocks=[ConvBlockConfig(channels=32, stride=1), ConvBlockConfig(channels=32, stride=2)],
        code_dim=12,
        max_epochs=40,
    )
    stacked_conv: StackedConvConfig = StackedConvConfig(
        blocks=_DIGITS_BLOCKS, code_dim=12, pretrain_epochs=3, max_epochs=15
    )
