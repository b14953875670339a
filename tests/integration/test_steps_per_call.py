"""`train.steps_per_call`: several optimiser steps per Lightning step give the same training as one per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from sklearn.datasets import load_digits

from aelab.config import load_params
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError
from aelab.training.run import build_datamodule, fit_module

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    x = (load_digits().data[:400] / 16).astype(np.float32)
    return PreparedData(Split(x[:320], None), Split(x[320:], None), Split(x[320:], None), meta={})


def params(*overrides: str):
    base = ["train.accelerator=cpu", "train.batch_size=32", "train.log_every_n_steps=2", "tracking.log_model=false"]
    return load_params(REPO / "params.yaml", [*base, *overrides])


def test_the_loader_groups_the_same_batches_in_the_same_order(digits) -> None:
    one = build_datamodule(params("train.steps_per_call=1"), "undercomplete", digits)
    three = build_datamodule(params("train.steps_per_call=3"), "undercomplete", digits)
    for dm in (one, three):
        dm.setup("fit")
    singles, groups = list(one.train_dataloader()), list(three.train_dataloader())
    assert [len(g) for g in groups] == [3, 3, 3, 1] and len(three.train_dataloader()) == 4  # 10 batches of 32
    flat = [batch for group in groups for batch in group]
    assert [b[1] for b in flat] == [b[1] for b in singles]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(flat, singles, strict=True))
    assert not isinstance(next(iter(three.val_dataloader())), list)  # evaluation batches are never grouped


@pytest.mark.parametrize(
    ("variant", "extra"),
    [
        ("denoising", ["train.lr_schedule=cosine", "train.warmup_epochs=1"]),  # corruption drawn per batch number
        ("stacked", ["variants.stacked.pretrain_epochs=1", "variants.stacked.hidden_dims=[16, 8]"]),  # greedy phases
    ],
)
def test_grouped_steps_train_to_the_same_weights_and_checkpoint(tmp_path, digits, variant, extra) -> None:
    """Same weights bit for bit, and the same optimiser and learning-rate state in `last.ckpt`, from which a run
    resumes: the schedule is stepped before the epoch-end checkpoint, as with one batch per step."""
    settings = [f"variants.{variant}.max_epochs=3", *extra]
    runs = {}
    for k in (1, 3):
        folder = tmp_path / f"k{k}"
        fitted = fit_module(params(f"train.steps_per_call={k}", *settings), variant, digits, ckpt_dir=folder)
        runs[k] = (fitted, torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True))
    (one, last_one), (three, last_three) = runs[1], runs[3]
    assert three.trainer.global_step == one.trainer.global_step == 30  # optimiser steps: 3 epochs of 10 batches
    assert (
        not three.trainer.lightning_module.automatic_optimization
        and one.trainer.lightning_module.automatic_optimization
    )
    assert three.trainer.lightning_module.direct_steps  # one CPU, fp32: the steps before a call's last went direct
    weights_one, weights_three = one.trainer.lightning_module.state_dict(), three.trainer.lightning_module.state_dict()
    assert all(torch.equal(weights_one[k], weights_three[k]) for k in weights_one)
    assert last_one["lr_schedulers"] == last_three["lr_schedulers"]
    state_one, state_three = last_one["optimizer_states"][0]["state"], last_three["optimizer_states"][0]["state"]
    assert all(torch.equal(state_one[p]["exp_avg"], state_three[p]["exp_avg"]) for p in state_one)
    assert last_one["epoch"] == last_three["epoch"]


class StepsLogged(Logger):
    """Records the step each metric was written at."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[str, list[int]] = {}

    name, version = "steps", "0"

    def log_metrics(self, metrics, step=None) -> None:
        for key in metrics:
            self.steps.setdefault(key, []).append(step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_metrics_are_written_on_the_optimiser_step_axis(digits) -> None:
    """Epoch metrics at the same steps whatever the grouping; the step loss every `log_every_n_steps` (2) steps,
    written at the end of the call that took it (3 steps per call: one log per call)."""
    logged = {}
    for k in (1, 3):
        logger = StepsLogged()
        fit_module(
            params(f"train.steps_per_call={k}", "variants.undercomplete.max_epochs=2"),
            "undercomplete",
            digits,
            logger=logger,
        )
        logged[k] = logger.steps
    assert logged[1]["val/loss"] == logged[3]["val/loss"] == [9, 19]
    assert logged[1]["train/loss"] == logged[3]["train/loss"]
    assert logged[1]["train/loss_step"] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert logged[3]["train/loss_step"] == [2, 5, 8, 9, 12, 15, 18, 19]  # 10 batches per epoch: calls of 3, 3, 3, 1


def test_steps_per_call_with_gradient_accumulation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train: .*steps_per_call .*accumulate_grad_batches"):
        params("train.steps_per_call=4", "train.accumulate_grad_batches=2")
