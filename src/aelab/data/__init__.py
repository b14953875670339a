"""Data: sources, corruption transforms and the LightningDataModule."""
