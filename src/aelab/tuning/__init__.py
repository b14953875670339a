"""Hyperparameter search with Optuna: the library under the `tune` stage."""
