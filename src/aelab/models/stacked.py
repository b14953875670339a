"""Stacked autoencoder: a deep MLP whose layers are pre-trained greedily, each as a shallow autoencoder on the codes
of the frozen layers below, then fine-tuned end to end (`aelab.training.pretrain`).

With sparsity every layer's units are sigmoids and each pre-training phase has the KL penalty on its own code (the
classic stacked sparse autoencoder: the penalty needs mean activations in (0, 1)).
"""

from __future__ import annotations

from aelab.models.layered import LayeredAutoencoder


class StackedAutoencoder(LayeredAutoencoder):
    variant = "stacked"

    def layer_is_sparse(self, index: int) -> bool:
        return self.sparse
