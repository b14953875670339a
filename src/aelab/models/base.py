"""The one base `AutoencoderModule`: owns loss, optimiser and logging. Variants override one small hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError

from aelab.errors import TrainingError
from aelab.models.networks import MLPDecoder, MLPEncoder, Reconstructor


class AutoencoderModule(L.LightningModule):
    """An MLP autoencoder trained on (corrupted, clean) batches.

    Hooks for variants: `code_activation` (what bounds the code), `penalties` (extra loss terms on the code)
    and `model_input` (which of corrupted/clean the encoder sees).
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
        **variant_options: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.input_dim = input_dim
        self.hidden_dims = list(hidden_dims)
        self.check_dims()
        self.encoder, self.decoder = self.build_networks()
        self.train_mse, self.val_mse, self.test_mse = MeanSquaredError(), MeanSquaredError(), MeanSquaredError()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    # ---- hooks for variants -------------------------------------------------------------------------
    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """Plain encoder (flat input -> code) and decoder (code -> flat logits); deep variants bring their own."""
        hp = self.hparams
        encoder = MLPEncoder(self.input_dim, self.hidden_dims, hp.activation, hp.dropout, self.code_activation())
        return encoder, MLPDecoder(self.input_dim, self.hidden_dims, hp.activation, hp.dropout)

    def check_dims(self) -> None:
        """Reject impossible shapes early (the undercomplete variant requires a bottleneck)."""

    def code_activation(self) -> nn.Module | None:
        return None

    def penalties(self, code: Tensor) -> dict[str, Tensor]:
        """Named extra loss terms computed from the batch's codes."""
        return {}

    def model_input(self, corrupted: Tensor, clean: Tensor) -> Tensor:
        return clean

    # ---- the model ----------------------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        return self.hidden_dims[-1]

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        return self.decoder(code).sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def reconstructor(self) -> Reconstructor:
        return Reconstructor(self.encoder, self.decoder)

    def reconstruction_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.hparams.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits.sigmoid(), target)

    def _losses(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        corrupted, clean = batch
        code = self.encode(self.model_input(corrupted, clean))
        logits = self.decoder(code)
        recon_loss = self.reconstruction_loss(logits, clean)
        terms = self.penalties(code)
        loss = recon_loss + sum(terms.values()) if terms else recon_loss
        return loss, logits.sigmoid(), code, {"recon": recon_loss, **terms}

    # ---- Lightning ----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Dropout draws from the global generator: reseeding per epoch makes a resumed run match an unbroken one.
        torch.manual_seed(self.hparams.seed * 7919 + self.current_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, recon, code, terms = self._losses(batch)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{self.variant}: loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "try a lower train.lr, model.loss=bce, or check the input data for extreme values"
            )
        n = batch[1].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log_code_statistics("train", code, n)
        self.train_mse(recon.detach(), batch[1])
        self.log("train/mse", self.train_mse, on_step=False, on_epoch=True)
        return loss

    def log_code_statistics(self, stage: str, code: Tensor, n: int) -> None:
        """Variants log what matters about their codes (the sparse one its mean activation)."""

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        loss, recon, _, _ = self._losses(batch)
        loss_metric, mse_metric = (self.val_loss, self.val_mse) if stage == "val" else (self.test_loss, self.test_mse)
        loss_metric.update(loss, weight=batch[1].shape[0])
        mse_metric.update(recon, batch[1])
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{stage}/mse", mse_metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        return cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
