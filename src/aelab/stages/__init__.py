"""One small entry point per DVC stage: prepare, train, reduce, evaluate."""
