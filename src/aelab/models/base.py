"""The one base `AutoencoderModule`: owns loss, optimiser and logging. Variants override one small hook.

Training logs cheaply: per step each scalar is added into an on-device running sum (one in-place op: no `self.log`,
no host sync, no metric-object overhead); once per epoch the sums go into torchmetrics means, which reduce them
across DDP ranks, and are logged. The step loss is logged every `log_every_n_steps` steps, and the running loss is
checked for NaN/inf every `check_finite_every_n_steps` steps (a check makes the host wait for the GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError

from aelab.errors import TrainingError
from aelab.models.components import DecoderStack, EncoderStack, Reconstructor
from aelab.models.networks import EncodeDecode, build_networks
from aelab.models.schedule import build_schedule


class StepsPerCall:
    """The training step of a module whose data module may hand it a list of batches (`train.steps_per_call`).

    A list is trained as one optimiser step per batch, in order, under manual optimisation (which the trainer
    switches on for it): the same steps on the same batches as one batch per call. Lightning's costs per training
    step (loop bookkeeping, batch hooks) are paid once per list, and so, as with Keras' `steps_per_execution`, are
    its per-step optimisation hooks (`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`): on one
    device in 32-bit precision the list's other steps call `backward` and the optimiser directly and only count
    themselves in `global_step`. Elsewhere (DDP, mixed precision: gradient sync and loss scaling live in those
    hooks' paths) every step goes through Lightning. Subclasses define `train_batch`.
    """

    step_log_interval: int | None = None
    """Optimiser steps between step-level logs when steps are grouped (the trainer then writes logs every call)."""
    direct_steps: bool = False
    """Whether a call's steps but the last may bypass Lightning's optimisation path (set once, at setup)."""

    def train_batch(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, ...] | list[tuple[Tensor, ...]], batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            if isinstance(batch, list):
                raise TrainingError("a list of batches needs the trainer of `build_trainer` (train.steps_per_call)")
            return self.train_batch(batch, batch_idx)
        optimizer = self.optimizers()
        parts = batch if isinstance(batch, list) else [batch]  # a data module of its own may yield single ones
        direct = self.direct_steps
        for index, part in enumerate(parts):
            if direct and index < len(parts) - 1:
                optimizer.optimizer.zero_grad()
                loss = self.train_batch(part, batch_idx)
                loss.backward()
                optimizer.optimizer.step()
                progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
                progress.increment_ready()
                progress.increment_completed()  # what Lightning's optimizer wrapper counts: global_step
                continue
            optimizer.zero_grad()
            loss = self.train_batch(part, batch_idx)
            self.manual_backward(loss)
            optimizer.step()
        # Lightning counts one logged step per call; the metrics' step axis counts optimiser steps, as without groups
        self.trainer.fit_loop.epoch_loop._batches_that_stepped += len(parts) - 1
        return loss.detach()


def direct_steps_allowed(trainer: L.Trainer) -> bool:
    """One device, plain 32-bit precision: nothing in Lightning's backward and step paths changes the step."""
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision


class AutoencoderModule(StepsPerCall, EncodeDecode, L.LightningModule):
    """An autoencoder trained on (corrupted, clean) batches; its networks come from `networks.build_networks`.

    Hooks for variants: `penalties` (extra loss terms on the code) and `model_input` (which of corrupted/clean
    the encoder sees).
    """

    variant = "autoencoder"

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        loss: str = "bce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        seed: int = 0,
        check_finite_every_n_steps: int = 50,
        lr_schedule: str = "none",
        warmup_epochs: int = 0,
        **variant_options: Any,
    ) -> None:
        super().__init__()
        # Kept in checkpoints, not sent to the loggers: runs log their own settings with dotted keys (train.lr).
        self.save_hyperparameters(logger=False)
        self.input_dim = input_dim
        self.hidden_dims = list(hidden_dims)
        self.check_dims()
        self.encoder, self.decoder = self.build_networks()
        self.val_mse, self.test_mse = MeanSquaredError(), MeanSquaredError()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # Epoch means of the training scalars (loss, penalty terms, code statistics), created on first use, fed
        # once per epoch from on-device running sums (batch-size weighted) and row counts.
        self.train_means = nn.ModuleDict()
        self._train_sums: dict[str, Tensor] = {}
        self._train_rows: dict[str, int] = {}
        self.check_finite_every_n_steps = check_finite_every_n_steps

    # ---- hooks for variants -------------------------------------------------------------------------
    def build_networks(self) -> tuple[EncoderStack, DecoderStack]:
        """Encoder (flat input -> code) and decoder (code -> flat logits), decided per variant in one place that
        needs no Lightning, so inference rebuilds exactly these networks without it."""
        return build_networks(self.variant, self.hparams)

    def check_dims(self) -> None:
        """Reject impossible shapes early (the undercomplete variant requires a bottleneck)."""

    def penalties(self, code: Tensor) -> dict[str, Tensor]:
        """Named extra loss terms computed from the batch's codes."""
        return {}

    def model_input(self, corrupted: Tensor, clean: Tensor) -> Tensor:
        return clean

    # ---- the model (code_dim, encode, decode, forward: `EncodeDecode`) ---------------------------------
    def reconstructor(self) -> Reconstructor:
        return Reconstructor(self.encoder, self.decoder)

    def reconstruction_loss(self, logits: Tensor, target: Tensor, recon: Tensor | None = None) -> Tensor:
        """`recon` is `logits.sigmoid()` where the caller has it already (the mse loss then needs no second pass)."""
        return reconstruction_loss(self.hparams.loss, logits, target, recon)

    def _losses(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        corrupted, clean = batch
        code = self.encode(self.model_input(corrupted, clean))
        logits = self.decoder(code)
        # One sigmoid per step: part of the graph for the mse loss; outside it for bce, where only metrics read it.
        recon = logits.sigmoid() if self.hparams.loss == "mse" else logits.detach().sigmoid()
        recon_loss = self.reconstruction_loss(logits, clean, recon)
        terms = self.penalties(code)
        loss = recon_loss + sum(terms.values()) if terms else recon_loss
        return loss, recon, code, {"recon": recon_loss, **terms}

    # ---- Lightning ----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Dropout draws from the global generator: reseeding per epoch makes a resumed run match an unbroken one.
        torch.manual_seed(self.hparams.seed * 7919 + self.current_epoch)
        for metric in self.train_means.values():
            metric.reset()
        self._train_sums.clear()
        self._train_rows.clear()

    def accumulate(self, stage: str, name: str, value: Tensor, n: int) -> None:
        """Add a batch scalar to its epoch mean (weighted by batch size) without syncing the device."""
        if stage != "train":
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
            return
        total = self._train_sums.get(name)
        if total is None:
            self._train_sums[name] = value.detach().float() * n
            self._train_rows[name] = n
        else:
            total.add_(value.detach(), alpha=n)
            self._train_rows[name] += n

    def train_batch(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss, recon, code, terms = self._losses(batch)
        n = batch[1].shape[0]
        self.accumulate("train", "loss", loss, n)
        for name, value in terms.items():
            if name != "recon" or len(terms) > 1:  # without penalties recon is the loss: logged from its mean
                self.accumulate("train", name, value, n)
        self.log_code_statistics("train", code, n)
        if self.hparams.loss == "mse":  # the reconstruction loss is the MSE already: no second pass over the batch
            self.accumulate("train", "mse", terms["recon"], n)
        else:  # one fused op (torchmetrics' MeanSquaredError.update costs three times as much per step)
            with torch.no_grad():
                self.accumulate("train", "mse", F.mse_loss(recon, batch[1]), n)
        if (self.global_step + 1) % self.check_finite_every_n_steps == 0:  # optimiser steps, grouped or not
            self._check_finite(loss)
        if (self.global_step + 1) % (self.step_log_interval or self.trainer.log_every_n_steps) == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=n, prog_bar=True)
        return loss

    def _check_finite(self, loss: Tensor | None = None) -> None:
        """The running epoch loss turns NaN/inf as soon as one step's loss does: one check covers every step."""
        running = self._train_sums.get("loss")
        if running is None or torch.isfinite(running):
            return
        value = loss.item() if loss is not None and not torch.isfinite(loss) else running.item()
        raise TrainingError(
            f"{self.variant}: loss became {value} at epoch {self.current_epoch}, step {self.global_step}; "
            "try a lower train.lr, model.loss=bce, or check the input data for extreme values "
            f"(checked every {self.check_finite_every_n_steps} steps: train.check_finite_every_n_steps)"
        )

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        for name, total in self._train_sums.items():
            if name not in self.train_means:
                self.train_means[name] = MeanMetric(nan_strategy="disable").to(total.device)
            rows = self._train_rows[name]
            self.train_means[name].update(total / rows, weight=rows)
        # torchmetrics' compute() reduces across DDP ranks, so the values logged here are global already.
        means = {f"train/{name}": self.train_means[name].compute() for name in self._train_sums}
        if "train/loss" in means and "train/recon" not in means:
            means["train/recon"] = means["train/loss"]
        loss = means.pop("train/loss", None)
        self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)  # a no-op mean of equal values
        if loss is not None:  # also on the progress bar
            self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, prog_bar=True)

    def log_code_statistics(self, stage: str, code: Tensor, n: int) -> None:
        """Variants record what matters about their codes (the sparse one its mean activation) via `accumulate`."""

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        loss, recon, _, _ = self._losses(batch)
        loss_metric, mse_metric = (self.val_loss, self.val_mse) if stage == "val" else (self.test_loss, self.test_mse)
        loss_metric.update(loss, weight=batch[1].shape[0])
        mse_metric.update(recon, batch[1])
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/mse", mse_metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """The optimiser, with the per-epoch learning-rate schedule over the trainer's epochs where one is set."""
        optimizer = build_optimizer(self.hparams, self.parameters())
        hp = self.hparams
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        schedule = build_schedule(optimizer, hp.lr_schedule, hp.warmup_epochs, max_epochs or 1)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}


def reconstruction_loss(kind: str, logits: Tensor, target: Tensor, recon: Tensor | None = None) -> Tensor:
    """The model's loss (`model.loss`) between decoder logits and the clean target; `recon` = `logits.sigmoid()`."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits.sigmoid() if recon is None else recon, target)


def build_optimizer(hparams: Any, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimiser (`train.optimizer`, `lr`, `weight_decay`) over `parameters`.

    The fused implementation (one kernel over all parameters) where every parameter is on a CPU or CUDA device:
    the per-tensor update costs more than the matmuls of a deep MLP's step on a CPU (18 ms against 3 ms per
    Adam step for 784-1000-500-250-30, one thread)."""
    parameters = list(parameters)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in parameters) or None
    if hparams.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=hparams.lr, momentum=0.9, weight_decay=hparams.weight_decay, fused=fused)
    cls = torch.optim.AdamW if hparams.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=hparams.lr, weight_decay=hparams.weight_decay, fused=fused)
