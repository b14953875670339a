"""The training library under the `train`, `tune` and `evaluate` stages: one trainer, one fit path, one digest."""
