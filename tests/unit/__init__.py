"""Unit tests: pure functions and single modules, no training beyond a forward pass or a toy optimisation."""
