"""System tests (all `slow`): real processes -- the full `dvc repro`, DDP and torchrun, kill and resume, an MLflow
server, parallel tune workers."""
