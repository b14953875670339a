import math

import numpy as np
import pytest
import torch

from aelab.config import validate_params
from aelab.data.datamodule import nearest_training_rows
from aelab.errors import CheckpointError, ConfigError
from aelab.models import VARIANT_CLASSES, build_module, load_model, save_model
from aelab.models.sparse import SparseAutoencoder, kl_sparsity
from aelab.models.undercomplete import UndercompleteAutoencoder, umap_curve
from tests.conftest import TINY_PARAMS


def test_kl_penalty_matches_closed_form():
    rho, rho_hat = 0.05, torch.tensor([0.05, 0.2, 0.5, 0.01])
    expected = sum(rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q)) for q in rho_hat.tolist())
    assert kl_sparsity(rho, rho_hat).item() == pytest.approx(expected, rel=1e-5)
    assert kl_sparsity(rho, torch.full((7,), rho)).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("variant", sorted(VARIANT_CLASSES))
def test_shapes_and_ranges(variant):
    params = validate_params(TINY_PARAMS)
    module = build_module(params, variant, input_dim=64, image_shape=[1, 8, 8])
    x = torch.rand(5, 64)
    code = module.encode(x)
    assert code.shape == (5, params.variant(variant).code_dim)
    recon = module(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1


def test_sparse_code_is_sigmoid_bounded():
    module = build_module(validate_params(TINY_PARAMS), "sparse", input_dim=64)
    code = module.encode(torch.rand(50, 64) * 10)
    assert code.min() >= 0 and code.max() <= 1


def test_undercomplete_rejects_an_overcomplete_code():
    with pytest.raises(ConfigError, match="variants.undercomplete.hidden_dims: code size 80 .* use the sparse variant"):
        build_module(
            validate_params(
                {**TINY_PARAMS, "variants": {**TINY_PARAMS["variants"], "undercomplete": {"hidden_dims": [80]}}}
            ),
            "undercomplete",
            input_dim=64,
        )


def test_sparse_penalty_pulls_mean_activation_towards_rho():
    """On a toy problem, training with beta > 0 moves the mean code activation to rho; beta = 0 does not."""
    torch.manual_seed(0)
    x = torch.rand(256, 20)

    def train(beta: float) -> float:
        torch.manual_seed(1)
        module = SparseAutoencoder(input_dim=20, hidden_dims=[30], rho=0.05, beta=beta, lr=1e-2)
        optimizer = module.configure_optimizers()
        for _ in range(300):
            loss, _, _, _ = module._losses((x, x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return module.encode(x).mean().item()

    with_penalty, without = train(beta=3.0), train(beta=0.0)
    assert abs(with_penalty - 0.05) < 0.02
    assert without > 0.2


def test_umap_curve_matches_umaps_own_fit():
    assert umap_curve(0.1) == pytest.approx((1.577, 0.895), abs=1e-3)  # umap-learn's a, b for min_dist=0.1


def test_neighbour_term_keeps_input_neighbours_together_in_the_code():
    """A swiss roll squeezed into a 2-D code: with the term, more of each point's nearest codes belong to its nearest
    input-space neighbours than with reconstruction alone (which folds the roll)."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(400, noise=0.05, random_state=0)
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 3)))[0]
    x = torch.tensor(points / 10 @ rotation.T, dtype=torch.float32)
    index = nearest_training_rows(x.numpy(), 5)

    def neighbours_kept(options: dict | None) -> float:
        torch.manual_seed(1)
        module = UndercompleteAutoencoder(input_dim=20, hidden_dims=[32, 2], lr=1e-2, loss="mse", neighbours=options)
        optimizer = module.configure_optimizers()
        for _ in range(300):
            rows = torch.randint(400, (100,))
            pick = index[rows, torch.randint(5, (100,))]
            loss, _, _, terms = module._losses((x[rows], x[rows], x[pick]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert ("neighbours" in terms) == (options is not None)
        with torch.no_grad():
            code = module.encode(x)
        nearest = torch.cdist(code, code).fill_diagonal_(float("inf")).topk(5, largest=False).indices
        return float(np.mean([len(set(nearest[i].tolist()) & set(index[i].tolist())) / 5 for i in range(400)]))

    plain = neighbours_kept(None)
    with_term = neighbours_kept({"k": 5, "weight": 1.0, "negatives": 5, "min_dist": 0.1})
    assert with_term > plain + 0.04  # measured: 0.47 without, 0.53 with


def test_denoising_feeds_the_corrupted_input():
    module = build_module(validate_params(TINY_PARAMS), "denoising", input_dim=64)
    corrupted, clean = torch.zeros(2, 64), torch.ones(2, 64)
    assert module.model_input(corrupted, clean) is corrupted
    assert build_module(validate_params(TINY_PARAMS), "undercomplete", 64).model_input(corrupted, clean) is clean


@pytest.mark.parametrize("variant", sorted(VARIANT_CLASSES))
def test_model_file_round_trip_with_weights_only(tmp_path, variant):
    module = build_module(validate_params(TINY_PARAMS), variant, input_dim=64, image_shape=[1, 8, 8]).eval()
    save_model(module, tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["variant"] == variant
    loaded = load_model(tmp_path / "model.pt")
    x = torch.rand(3, 64)
    assert type(loaded) is type(module)
    assert torch.equal(loaded(x), module(x))


def test_unreadable_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.pt: not a readable aelab model file"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="model file not found"):
        load_model(tmp_path / "missing.pt")
