"""Stacked, convolutional and stacked convolutional variants: greedy pre-training and the train stage on digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData, Split
from aelab.models import build_module, load_model
from aelab.models.greedy import GreedyLayerModule
from tests.helpers import BLOCK_SETS, conv_variant, make_params


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    parts = {"train": slice(0, 400), "val": slice(400, 520), "test": slice(520, 640)}
    splits = {name: Split(x[s], y[s].astype(np.int64)) for name, s in parts.items()}
    return PreparedData(**splits, meta={"name": "digits-test", "image_shape": [1, 8, 8], "n_features": 64})


# ---- greedy layer-wise pre-training ---------------------------------------------------------------------------------
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
    from aelab.training.pretrain import pretrain_layers

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
    from aelab.training.pretrain import pretrain_layers

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
def test_deep_variant_trains_saves_and_loads(project, digits, variant) -> None:
    from aelab.reducers import AutoencoderReducer
    from aelab.training.run import train_variant

    overrides = {"tracking": {"uri": f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", "log_model": False}}
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
