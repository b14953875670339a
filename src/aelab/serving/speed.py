"""`aelab bench-encode`: what `aelab encode` costs over the bare forward pass of the same encoder.

In one run, on the same random MNIST-sized rows (0..255, like pixels): `aelab encode`'s whole path on a `.npy` file
(read in chunks, row checks, scaling, encoder, `.npy` written) against `encoder(torch.from_numpy(x))` under
`torch.no_grad()` on the array already in memory. Each path runs `repeats` times, alternating, and the fastest run
of each counts. Rows per second for a CSV input (parsing dominates there) are reported beside.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aelab.data.scaling import Scaler
from aelab.models.networks import Autoencoder
from aelab.serving.bundle import write_bundle
from aelab.serving.commands import apply_to_file
from aelab.serving.model import load

TARGET_RATIO = 1.3
DEFAULT_HIDDEN = [256, 128, 12]


def bench_bundle(folder: Path, x: np.ndarray, hidden_dims: list[int] = DEFAULT_HIDDEN) -> None:
    """An untrained undercomplete model with a scaling fitted on `x`: speed does not depend on the weights."""
    hparams = {"input_dim": x.shape[1], "hidden_dims": hidden_dims, "activation": "relu", "dropout": 0.0}
    module = Autoencoder("undercomplete", hparams)
    meta = {"n_features": x.shape[1], "scaling": Scaler("global").fit(x).to_dict()}
    write_bundle(folder, module, meta)


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_encode(
    model_path: Path | None = None, rows: int = 60000, csv_rows: int = 5000, repeats: int = 3, features: int = 784
) -> dict[str, float]:
    """Time both paths and print the ratio; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        if model_path is None:
            model_path = folder / "model"
            bench_bundle(model_path, rng.integers(0, 256, (256, features)).astype(np.float32))
        model = load(model_path)
        x = rng.integers(0, 256, (rows, model.n_features_in_)).astype(np.float32)
        np.save(folder / "rows.npy", x)
        encoder = model.module_.encoder

        def bare() -> None:
            with torch.no_grad():
                encoder(torch.from_numpy(x))

        def encode() -> None:
            apply_to_file("encode", model_path, folder / "rows.npy", folder / "codes.npy")

        bare_s = encode_s = float("inf")
        for _ in range(repeats):  # alternating, so both paths see the same machine load
            bare_s = min(bare_s, _seconds(bare))
            encode_s = min(encode_s, _seconds(encode))
        if not np.allclose(np.load(folder / "codes.npy"), model.compute("codes", x), atol=1e-6):
            raise RuntimeError("bench-encode: aelab encode and the bare forward disagree")
        import pandas as pd

        n_csv = min(csv_rows, rows)
        pd.DataFrame(x[:n_csv]).to_csv(folder / "rows.csv", index=False, float_format="%.7g")
        csv_s = _seconds(lambda: apply_to_file("encode", model_path, folder / "rows.csv", folder / "codes.csv"))
    result = {
        "rows": rows,
        "features": int(x.shape[1]),
        "encode_s": encode_s,
        "bare_s": bare_s,
        "ratio": encode_s / bare_s,
        "npy_rows_per_s": rows / encode_s,
        "csv_rows": n_csv,
        "csv_rows_per_s": n_csv / csv_s,
    }
    print(
        f"aelab encode, {rows} rows x {result['features']} (.npy -> .npy): {encode_s:.3f} s "
        f"({result['npy_rows_per_s']:,.0f} rows/s)"
    )
    print(f"bare torch.no_grad() forward of the same encoder on the same array in memory: {bare_s:.3f} s")
    verdict = "within" if result["ratio"] <= TARGET_RATIO else "above"
    print(
        f"ratio {result['ratio']:.2f} ({verdict} the target of {TARGET_RATIO}; fastest of {repeats} runs each, "
        f"{torch.get_num_threads()} torch threads)"
    )
    print(f"aelab encode, {n_csv} rows (.csv -> .csv): {result['csv_rows_per_s']:,.0f} rows/s")
    return result
