"""One greedy pre-training phase as a LightningModule: layer k of a layered autoencoder trained as a shallow
autoencoder on the output of the frozen layers below it.

The phase shares the owner's layer modules (no copies): training it trains the owner's layer k in place, while
layers `0..k-1` are frozen (no gradients, kept in eval mode so dropout and batch-norm statistics stay still).
Layer 0 reconstructs the input with the model's loss; higher layers reconstruct the code below with MSE. With a
corruption configured, the phase's input is the code of the corrupted batch and its target that of the clean one.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from aelab.errors import TrainingError
from aelab.models.base import StepsPerCall, build_optimizer, reconstruction_loss
from aelab.models.layered import LayeredAutoencoder
from aelab.models.sparse import kl_sparsity


class GreedyLayerModule(StepsPerCall, L.LightningModule):
    def __init__(self, owner: LayeredAutoencoder, index: int) -> None:
        super().__init__()
        hp = owner.hparams
        keys = ("loss", "lr", "weight_decay", "optimizer", "seed", "rho", "beta")
        # Not logged: the phase shares the variant's MLflow run, whose params are the variant's own.
        self.save_hyperparameters({"index": index, **{k: hp.get(k) for k in keys}}, logger=False)
        self.index = index
        self.below = owner.encoder.below(index)
        self.below.requires_grad_(False)
        self.below.eval()  # Lightning captures and restores each submodule's mode around validation: start in eval
        self.encoder = owner.encoder.layers[index]
        self.decoder = owner.decoder.layers[index]
        self.sparse = owner.layer_is_sparse(index)
        self.prefix = f"pretrain/layer{index + 1}"
        self.val_loss = MeanMetric()
        # Epoch means of the training terms, logged once per epoch (per-step `self.log` is costly; see base.py).
        self.train_means = nn.ModuleDict()

    @property
    def monitor(self) -> str:
        return f"{self.prefix}/val_loss"

    def train(self, mode: bool = True) -> GreedyLayerModule:
        super().train(mode)
        self.below.eval()  # frozen layers: no dropout, no batch-norm statistics updates
        return self

    def losses(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """This layer's own reconstruction loss (and sparsity penalty) on one (corrupted, clean) batch."""
        corrupted, clean = batch
        with torch.no_grad():
            target = self.below(clean)
            source = target if corrupted is clean else self.below(corrupted)
        code = self.encoder(source)
        output = self.decoder(code)
        # Layer 0 returns logits for the input (the model's own loss); higher layers the code below (MSE).
        recon = reconstruction_loss(self.hparams.loss, output, clean) if self.index == 0 else F.mse_loss(output, target)
        terms = {"recon": recon}
        if self.sparse:
            terms["sparsity"] = self.hparams.beta * kl_sparsity(self.hparams.rho, code.mean(dim=0))
        return terms

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(self.hparams.seed * 7919 + 100_003 * (self.index + 1) + self.current_epoch)
        for metric in self.train_means.values():
            metric.reset()

    def train_batch(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{self.prefix}: loss became {loss.item()} at epoch {self.current_epoch}; try a lower train.lr"
            )
        n = batch[1].shape[0]
        for name, value in {"loss": loss, **(terms if len(terms) > 1 else {})}.items():
            if name not in self.train_means:
                self.train_means[name] = MeanMetric().to(value.device)
            self.train_means[name].update(value.detach(), weight=n)
        return loss

    def on_train_epoch_end(self) -> None:
        # torchmetrics' compute() reduces across DDP ranks: the logged means are global.
        means = {f"{self.prefix}/{name}": metric.compute() for name, metric in self.train_means.items()}
        self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.val_loss.update(sum(self.losses(batch).values()), weight=batch[1].shape[0])
        self.log(self.monitor, self.val_loss, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The owner's optimiser settings; the frozen layers have no gradients, so the optimiser leaves them alone.
        return build_optimizer(self.hparams, self.parameters())
