"""Using a trained autoencoder on new data: the model bundle, the Python API, file I/O, export and MLflow serving."""
