"""Stacked, convolutional and stacked convolutional variants: shapes, greedy pre-training, config errors, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from aelab.config import validate_params
from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError
from aelab.models import build_module, load_model
from aelab.models.greedy import GreedyLayerModule

BASE = {
    "variants": {
        "undercomplete": {"hidden_dims": [16, 8]},
        "sparse": {"hidden_dims": [32]},
        "denoising": {"hidden_dims": [16, 8], "corruption": [{"kind": "masking", "p": 0.2}]},
    },
    "train": {"batch_size": 32, "lr": 5.0e-3, "max_epochs": 2},
    "tracking": {"log_model": False},
}


def make_params(overrides: dict | None = None, **variants: dict):
    raw = {key: dict(value) for key, value in BASE.items()}
    raw["variants"] = {**BASE["variants"], **variants}
    for key, value in (overrides or {}).items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_params(raw, "test")


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    parts = {"train": slice(0, 400), "val": slice(400, 520), "test": slice(520, 640)}
    splits = {name: Split(x[s], y[s].astype(np.int64)) for name, s in parts.items()}
    return PreparedData(**splits, meta={"name": "digits-test", "image_shape": [1, 8, 8], "n_features": 64})


def conv_variant(blocks: list[dict], code_dim: int = 6, **extra) -> dict:
    return {"blocks": blocks, "code_dim": code_dim, **extra}


# ---- shapes ---------------------------------------------------------------------------------------------------------
BLOCK_SETS = {
    "stride2": [{"channels": 4, "stride": 2}, {"channels": 8, "stride": 2}],
    "pool2-batchnorm": [{"channels": 4, "pool": 2, "norm": "batch"}, {"channels": 8, "kernel": 5, "pool": 2}],
    "even-kernel-stride3": [{"channels": 4, "kernel": 4, "stride": 3}, {"channels": 6, "kernel": 2, "stride": 1}],
}


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (1, 7, 7), (3, 9, 11)])
@pytest.mark.parametrize("blocks", list(BLOCK_SETS), ids=str)
@pytest.mark.parametrize("decoder", ["transposed", "upsample"])
def test_conv_output_matches_input_shape_layer_by_layer(image_shape, blocks, decoder) -> None:
    n_features = int(np.prod(image_shape))
    params = make_params(conv=conv_variant(BLOCK_SETS[blocks], decoder=decoder))
    module = build_module(params, "conv", n_features, list(image_shape)).eval()
    x = torch.rand(3, n_features)
    assert module(x).shape == x.shape
    assert module.encode(x).shape == (3, 6)
    # Every decoder layer lands exactly on the shape its encoder layer received (what pre-training needs).
    h = x
    for encoder_layer, decoder_layer in zip(module.encoder.layers, module.decoder.layers, strict=True):
        code = encoder_layer(h)
        assert decoder_layer(code).shape == h.shape
        h = code


# ---- configuration errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "image_shape", "expected"),
    [
        (conv_variant([{"channels": 4, "stride": 2}], code_dim=64), [1, 8, 8], "variants.conv.code_dim: code size 64"),
        (conv_variant([{"channels": 4, "stride": 2}] * 4), [1, 8, 8], "variants.conv.blocks[3].stride"),
        (
            conv_variant([{"channels": 4, "pool": 3}, {"channels": 4, "pool": 3}]),
            [1, 8, 8],
            "variants.conv.blocks[1].pool",
        ),
        (conv_variant([{"channels": 4, "stride": 2}]), None, "variants.conv: needs image data"),
        (conv_variant([{"channels": 4, "stride": 2}]), [1, 4, 4], "does not match the 64 input features"),
    ],
)
def test_invalid_conv_settings_are_one_line_config_errors(variant, image_shape, expected) -> None:
    with pytest.raises(ConfigError) as err:
        build_module(make_params(conv=variant), "conv", 64, image_shape)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        ({"blocks": [], "code_dim": 4}, "variants.conv.blocks"),
        ({"blocks": [{"channels": 0}], "code_dim": 4}, "variants.conv.blocks.0.channels"),
        (
            {"blocks": [{"channels": 4, "padding": 1}], "code_dim": 4},
            "variants.conv.blocks.0.padding: unknown key; allowed: activation, channels",
        ),
        ({"blocks": [{"channels": 4}], "code_dim": 4, "decoder": "pixelshuffle"}, "variants.conv.decoder"),
    ],
)
def test_invalid_conv_params_name_the_key(conv, expected) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        make_params(conv=conv)


def test_stacked_code_must_be_a_bottleneck_unless_sparse() -> None:
    with pytest.raises(ConfigError, match=r"variants\.stacked\.hidden_dims: code size 80"):
        build_module(make_params(stacked={"hidden_dims": [32, 80]}), "stacked", 64)
    sparse = make_params(stacked={"hidden_dims": [32, 80], "sparsity": {"rho": 0.1, "beta": 0.5}})
    assert build_module(sparse, "stacked", 64).code_dim == 80


# ---- sparsity and corruption options --------------------------------------------------------------------------------
def test_conv_with_sparsity_has_sigmoid_code_penalty_and_sees_corrupted_input() -> None:
    params = make_params(conv=conv_variant(BLOCK_SETS["stride2"], sparsity={"rho": 0.05, "beta": 1.0}))
    module = build_module(params, "conv", 64, [1, 8, 8])
    x = torch.rand(8, 64)
    code = module.encode(x)
    assert ((code > 0) & (code < 1)).all()
    assert set(module.penalties(code)) == {"sparsity"}
    corrupted = torch.zeros_like(x)
    assert module.model_input(corrupted, x) is corrupted


# ---- greedy layer-wise pre-training ---------------------------------------------------------------------------------
def test_sparse_stacked_phases_penalise_each_layer_and_see_the_corrupted_input() -> None:
    params = make_params(stacked={"hidden_dims": [32, 16], "sparsity": {"rho": 0.05, "beta": 1.0}})
    module = build_module(params, "stacked", 64)
    clean = torch.rand(16, 64)
    corrupted = torch.zeros_like(clean)
    for index in range(module.n_layers):
        phase = GreedyLayerModule(module, index)
        terms = phase.losses((clean, clean))
        assert set(terms) == {"recon", "sparsity"} and terms["sparsity"] > 0
        code = phase.encoder(phase.below(clean))
        assert ((code > 0) & (code < 1)).all(), "sparse stacked layers are sigmoid units"
        # A corrupted input changes the loss (the phase encodes it); the target stays the clean code.
        assert not torch.equal(phase.losses((corrupted, clean))["recon"], terms["recon"])
    module.requires_grad_(True)


def layer_loss(module, index: int, data: PreparedData) -> float:
    """Layer `index`'s own reconstruction loss (as its pre-training phase defines it) on the validation split."""
    phase = GreedyLayerModule(module, index).eval()
    x = torch.from_numpy(data.val.x)
    with torch.no_grad():
        loss = float(phase.losses((x, x))["recon"])
    module.requires_grad_(True)
    return loss


@pytest.mark.parametrize(
    ("variant", "settings"),
    [
        ("stacked", {"hidden_dims": [32, 16, 8], "model_dropout": 0.1}),
        ("stacked_conv", conv_variant([{"channels": 4, "stride": 2, "norm": "batch"}, {"channels": 8, "stride": 2}])),
    ],
)
def test_greedy_pretraining_trains_each_layer_and_freezes_the_others(tmp_path, digits, variant, settings) -> None:
    from aelab.stages.pretrain import pretrain_layers

    settings = dict(settings)
    dropout = settings.pop("model_dropout", 0.0)
    params = make_params({"model": {"dropout": dropout}}, **{variant: {**settings, "pretrain_epochs": 3}})
    torch.manual_seed(0)
    module = build_module(params, variant, 64, [1, 8, 8])
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    dm = AutoencoderDataModule(digits, batch_size=32, seed=params.seed)
    epochs = pretrain_layers(params, variant, module, dm, logger=False, ckpt_dir=tmp_path)
    assert epochs == module.n_layers * 3
    assert all(m.training for m in module.modules()), "fine-tuning must start with every layer in train mode"

    states = [initial]
    for k in range(module.n_layers):
        states.append(torch.load(tmp_path / "pretrain" / f"layer{k + 1}.pt", weights_only=True))
    for index in range(module.n_layers):
        before, after = states[index], states[index + 1]
        # Layer `index` changed; every other tensor (weights and batch-norm buffers alike) is bit-for-bit the same.
        own = (f"encoder.layers.{index}.", f"decoder.layers.{index}.")
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed, f"layer {index} was not trained"
        assert all(k.startswith(own) for k in changed), f"phase {index} changed {sorted(changed)}"
        # ... and its own reconstruction loss went down.
        module.load_state_dict(before)
        loss_before = layer_loss(module, index, digits)
        module.load_state_dict(after)
        loss_after = layer_loss(module, index, digits)
        assert loss_after < loss_before, f"layer {index}: {loss_before} -> {loss_after}"
    assert all(p.requires_grad for p in module.parameters())


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, digits) -> None:
    """Finished phases are skipped, an unfinished one resumes from its checkpoint: same weights as one unbroken run."""
    from aelab.stages.pretrain import pretrain_layers

    params = make_params(stacked={"hidden_dims": [32, 16, 8], "pretrain_epochs": 2})
    dm = AutoencoderDataModule(digits, batch_size=32, seed=params.seed)

    def run(folder: Path) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        module = build_module(params, "stacked", 64)
        pretrain_layers(params, "stacked", module, dm, logger=False, ckpt_dir=folder)
        return module.state_dict()

    unbroken = run(tmp_path / "a")
    # Simulate a stop during layer 3 with layer 2 finished but not yet marked: drop the later markers and phase.
    (tmp_path / "a" / "pretrain" / "layer2.pt").unlink()
    (tmp_path / "a" / "pretrain" / "layer3.pt").unlink()
    for file in (tmp_path / "a" / "pretrain" / "layer3").iterdir():
        file.unlink()
    resumed = run(tmp_path / "a")
    assert all(torch.equal(unbroken[k], resumed[k]) for k in unbroken)


# ---- the whole train stage ------------------------------------------------------------------------------------------
DEEP_VARIANTS = {
    "stacked": {"hidden_dims": [32, 8], "pretrain_epochs": 1, "max_epochs": 2, "compare_scratch": True},
    "conv": conv_variant(
        BLOCK_SETS["stride2"],
        decoder="upsample",
        sparsity={"rho": 0.1, "beta": 0.1},
        corruption=[{"kind": "masking", "p": 0.2}],
    ),
    "stacked_conv": conv_variant(BLOCK_SETS["pool2-batchnorm"], pretrain_epochs=1, max_epochs=1),
}


@pytest.mark.parametrize("variant", list(DEEP_VARIANTS))
def test_deep_variant_trains_saves_and_loads(tmp_path, monkeypatch, digits, variant) -> None:
    from aelab.reducers import AutoencoderReducer
    from aelab.stages.train import train_variant

    monkeypatch.chdir(tmp_path)
    overrides = {"tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "log_model": False}}
    params = make_params(overrides, **{variant: DEEP_VARIANTS[variant]})
    result = train_variant(params, variant, digits, out=Path("models"))
    assert np.isfinite(result.metrics["test/loss"])
    if variant != "conv":
        n_layers = result.module.n_layers
        assert result.metrics["total_epochs"] == n_layers * 1 + result.metrics["epochs"]
    if variant == "stacked":  # the from-scratch baseline ran for the same total epochs, as a child MLflow run
        import mlflow

        assert result.metrics["scratch/epochs"] == result.metrics["total_epochs"]
        assert np.isfinite(result.metrics["scratch/test/loss"])
        mlflow.set_tracking_uri(overrides["tracking"]["uri"])
        parent = mlflow.get_run(result.run_id)
        assert {"pretrain/layer1/loss", "pretrain/layer2/val_loss", "train/loss", "scratch/test/mse"} <= set(
            parent.data.metrics
        )
        children = mlflow.search_runs(
            filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'", search_all_experiments=True
        )
        assert list(children["tags.mlflow.runName"]) == ["stacked/scratch"]

    loaded = load_model(Path("models") / variant / "model.pt")
    assert type(loaded) is type(result.module)
    x = torch.from_numpy(digits.test.x[:16])
    with torch.no_grad():
        assert torch.equal(loaded(x), result.module.eval()(x))
    codes = AutoencoderReducer.load(Path("models") / variant / "model.pt").transform(digits.test.x)
    assert codes.shape == (len(digits.test.x), result.module.code_dim)


def test_documented_mnist_settings_build_for_28x28() -> None:
    from aelab.config import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "src" / "aelab" / "benchmarks" / "deep-mnist.yaml")
    x = torch.rand(2, 784)
    for variant in ("stacked", "conv", "stacked_conv"):
        module = build_module(params, variant, 784, [1, 28, 28]).eval()
        assert module(x).shape == x.shape
