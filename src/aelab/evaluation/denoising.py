"""Denoising: how close to the clean test data are the corrupted input, each variant's output and PCA's?

Each configured corruption is applied once to the clean test split with a seeded generator; every denoiser
sees the same corrupted samples. PSNR (per image, averaged) and SSIM come from torchmetrics, on images of
the dataset's `image_shape`; data that are not images get PSNR only. PSNR is that of the mean squared error
over all test pixels (per-image PSNR is infinite for an image a corruption happened to leave unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from aelab.config import CorruptionConfig
from aelab.data.corruptions import build_corruption

Denoiser = Callable[[np.ndarray], np.ndarray]


def corruption_name(cfg: CorruptionConfig) -> str:
    """`gaussian_0.3`, `salt_pepper_0.1`, `masking_0.3`: kind and level, used in metric names."""
    return f"{cfg.kind}_{cfg.level:g}"


def corrupt(clean: np.ndarray, cfg: CorruptionConfig, seed: int) -> np.ndarray:
    corruption = build_corruption([cfg])
    generator = torch.Generator().manual_seed(seed)
    return corruption(torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)), generator).numpy()


def ssim_window(image_shape: tuple[int, int, int]) -> tuple[int, float]:
    """The usual 11x11 Gaussian window (sigma 1.5), shrunk for small images such as the 8x8 digits.

    The side is the largest odd number up to half the image side (at least 3); sigma shrinks with it, since
    torchmetrics sizes a Gaussian window from sigma (3.5 sigma each side).
    """
    half = min(image_shape[1:]) // 2
    kernel = max(3, min(11, half if half % 2 else half - 1))
    return kernel, 1.5 * (kernel - 1) / 10


def image_quality(
    estimate: np.ndarray, clean: np.ndarray, image_shape: tuple[int, int, int] | None
) -> dict[str, float]:
    """PSNR (data range 1, of the mean squared error over all values) and, for images, mean SSIM."""
    preds = torch.from_numpy(np.clip(estimate, 0.0, 1.0).astype(np.float32))
    target = torch.from_numpy(clean.astype(np.float32))
    if image_shape is None:
        return {"psnr": float(peak_signal_noise_ratio(preds, target, data_range=1.0))}
    preds, target = preds.reshape(-1, *image_shape), target.reshape(-1, *image_shape)
    kernel, sigma = ssim_window(image_shape)
    return {
        "psnr": float(peak_signal_noise_ratio(preds, target, data_range=1.0)),
        "ssim": float(
            structural_similarity_index_measure(preds, target, data_range=1.0, kernel_size=kernel, sigma=sigma)
        ),
    }


def evaluate_denoisers(
    clean: np.ndarray,
    corruptions: list[CorruptionConfig],
    denoisers: dict[str, Denoiser],
    image_shape: tuple[int, int, int] | None,
    seed: int,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """Metrics per method (`raw` is the corrupted input itself) named `denoise/<corruption>/<psnr|ssim>`,
    and the outputs per corruption (for the sample grids)."""
    metrics: dict[str, dict[str, float]] = {"raw": {}, **{m: {} for m in denoisers}}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for i, cfg in enumerate(corruptions):
        name = corruption_name(cfg)
        corrupted = corrupt(clean, cfg, seed * 1009 + i)
        outputs[name] = {"clean": clean, "corrupted": corrupted}
        for method, denoise in {"raw": None, **denoisers}.items():
            estimate = corrupted if denoise is None else np.clip(denoise(corrupted), 0.0, 1.0)
            if denoise is not None:
                outputs[name][method] = estimate
            for key, value in image_quality(estimate, clean, image_shape).items():
                metrics[method][f"denoise/{name}/{key}"] = value
    return metrics, outputs
