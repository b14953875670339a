"""The per-epoch learning-rate schedule: linear warm-up, then constant or a half cosine."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from sklearn.datasets import load_digits

from aelab.config import load_params
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError
from aelab.models import VARIANT_CLASSES, module_options
from aelab.models.schedule import lr_factor, schedule_options
from aelab.training.run import build_datamodule
from aelab.training.trainer import build_trainer

REPO = Path(__file__).resolve().parents[2]


def test_factors_warm_up_then_follow_the_half_cosine() -> None:
    assert [lr_factor(e, "none", 0, 4) for e in range(4)] == [1.0] * 4
    assert [lr_factor(e, "none", 2, 4) for e in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    cosine = [lr_factor(e, "cosine", 1, 4) for e in range(4)]
    assert cosine == pytest.approx([0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3))])


def test_unknown_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_params(REPO / "params.yaml", ["train.lr_schedule=step"])


class _Rates(L.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize(("schedule", "warmup"), [("cosine", 1), ("none", 0)])
def test_training_steps_the_rate_once_per_epoch(schedule: str, warmup: int) -> None:
    overrides = ["train.accelerator=cpu", f"train.lr_schedule={schedule}", f"train.warmup_epochs={warmup}"]
    params = load_params(REPO / "params.yaml", [*overrides, "variants.undercomplete.hidden_dims=[16, 4]"])
    x = (load_digits().data[:400] / 16).astype(np.float32)
    data = PreparedData(Split(x[:320], None), Split(x[320:], None), Split(x[320:], None), meta={})
    options = {**module_options(params, "undercomplete", 64), **schedule_options(params.train)}
    module = VARIANT_CLASSES["undercomplete"](**options)
    rates = _Rates()
    trainer = build_trainer(params, None, logger=False, max_epochs=4, callbacks=[rates])
    trainer.fit(module, build_datamodule(params, "undercomplete", data))
    lr = params.train.lr
    expected = [lr * lr_factor(epoch, schedule, warmup, 4) for epoch in range(4)]
    assert rates.rates == pytest.approx(expected)
    assert module.hparams.lr_schedule == schedule  # saved with the model, so a checkpoint resumes the schedule
