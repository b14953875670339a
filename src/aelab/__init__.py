"""aelab: an autoencoder lab built on Lightning, DVC, Optuna and MLflow."""

__version__ = "0.1.0"
