"""Stacked, convolutional and stacked convolutional variants: shapes, config errors, pre-training phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aelab.errors import ConfigError
from aelab.models import build_module
from aelab.models.greedy import GreedyLayerModule
from tests.conftest import REPO
from tests.helpers import BLOCK_SETS, conv_variant, make_params


# ---- shapes ---------------------------------------------------------------------------------------------------------
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


def test_documented_mnist_settings_build_for_28x28() -> None:
    from aelab.config import load_params

    params = load_params(REPO / "src" / "aelab" / "benchmarks" / "deep-mnist.yaml")
    x = torch.rand(2, 784)
    for variant in ("stacked", "conv", "stacked_conv"):
        module = build_module(params, variant, 784, [1, 28, 28]).eval()
        assert module(x).shape == x.shape
