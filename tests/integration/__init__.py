"""Integration tests: tiny models trained in-process, stages run in a scratch project, MLflow on SQLite."""
