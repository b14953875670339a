"""Long runs (not tests): the published-results study on MNIST and Fashion-MNIST, and its settings."""
