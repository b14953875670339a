"""What the codes are good for, one concern per module; `aelab.stages.evaluate` runs them in order.

- `reduction`: reconstruction error against PCA, explained variance, code statistics;
- `classification`: linear probe and k-nearest-neighbours on codes, per-class accuracy, confusion matrices;
- `tsne`: 2-D maps of the test codes;
- `oneclass`: per-class models, anomaly scores by reconstruction error, AUROC and thresholded F1;
- `denoising`: PSNR and SSIM of corrupted inputs, of each variant's reconstruction and of PCA;
- `sparsity`: mean activations against `rho`, dead and always-on units, learned features;
- `report`: Markdown tables from the metrics file (`aelab report`).
"""
