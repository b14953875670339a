"""Trained models load for use without Lightning, and give what their LightningModules give."""

from __future__ import annotations

import pytest
import torch

from aelab.config.run import BUILT_IN, _lightning_names
from aelab.errors import CheckpointError
from aelab.models import VARIANT_CLASSES, build_module, save_model
from aelab.models.networks import BUILDERS, Autoencoder, load_networks
from tests.helpers import BLOCK_SETS, conv_variant, imported_modules, make_params

IMAGE = [1, 8, 8]
VARIANTS = {
    "undercomplete": {},
    "sparse": {},
    "denoising": {},
    "stacked": {"stacked": {"hidden_dims": [16, 8], "sparsity": {"rho": 0.1, "beta": 0.5}}},
    "conv": {"conv": conv_variant(BLOCK_SETS["pool2-batchnorm"])},
    "stacked_conv": {"stacked_conv": conv_variant(BLOCK_SETS["stride2"], decoder="upsample")},
}


def trained(variant: str):
    """The variant's LightningModule after a few optimiser steps (batch-norm statistics included)."""
    torch.manual_seed(0)
    module = build_module(make_params(**VARIANTS[variant]), variant, 64, IMAGE)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    x = torch.rand(32, 64)
    module.train()
    for _ in range(3):
        loss = module.reconstruction_loss(module.decoder(module.encode(x)), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return module.eval()


def test_using_a_model_does_not_import_lightning():
    loaded = imported_modules(
        "aelab.stages.reduce",
        "aelab.reducers",
        "aelab.serving.model",
        "aelab.serving.commands",
        "aelab.serving.export",
        "aelab.serving.pyfunc",
        "aelab.models.networks",
    )
    assert not loaded & {"lightning", "torchmetrics", "optuna"}


def test_a_variants_reduce_stage_does_not_import_scikit_learn():
    """About 1 s per process; only the PCA branch of `reduce` needs it."""
    assert "sklearn" not in imported_modules("aelab.stages.reduce", "aelab.reducers")


def test_training_stages_do_not_import_optuna():
    assert "optuna" not in imported_modules("aelab.stages.train")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_loaded_networks_match_the_lightning_module(tmp_path, variant):
    module = trained(variant)
    save_model(module, tmp_path / "model.pt")
    model = load_networks(tmp_path / "model.pt")
    assert not model.training
    assert (model.variant, model.input_dim, model.hidden_dims) == (variant, module.input_dim, module.hidden_dims)
    assert model.code_dim == module.code_dim
    x = torch.rand(10, 64)
    with torch.no_grad():
        assert torch.equal(model.encode(x), module.encode(x))
        assert torch.equal(model(x), module(x))
        codes = torch.rand(4, model.code_dim)
        assert torch.equal(model.decode(codes), module.decode(codes))


def test_every_variant_has_its_networks_built_in_one_place():
    assert set(VARIANT_CLASSES) <= set(BUILDERS)
    for variant in VARIANT_CLASSES:
        module = build_module(make_params(**VARIANTS[variant]), variant, 64, IMAGE)
        assert Autoencoder(variant, module.hparams).state_dict().keys() == module.state_dict().keys()


def test_a_model_file_without_a_network_weight_is_a_one_line_error(tmp_path):
    module = trained("undercomplete")
    save_model(module, tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["state_dict"]["decoder.layers.0.0.weight"]
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as caught:
        load_networks(tmp_path / "model.pt")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'model.pt'}: missing network weights decoder.layers.0.0.weight")


def test_weights_of_another_shape_and_foreign_files_are_clear_errors(tmp_path):
    save_model(trained("undercomplete"), tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["hparams"]["hidden_dims"] = [16, 4]
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model.pt: weights do not fit the undercomplete networks \(") as caught:
        load_networks(tmp_path / "model.pt")
    assert "\n" not in str(caught.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a readable aelab model file"):
        load_networks(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="model file not found"):
        load_networks(tmp_path / "missing.pt")


def test_trainer_names_validated_without_lightning_are_ones_it_accepts():
    for kind, names in BUILT_IN.items():
        assert names <= set(_lightning_names(kind)), kind
