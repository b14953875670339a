"""`aelab export MODEL --format onnx|torchscript`: the encoder as a file other runtimes load.

The exported graph includes the fitted scaling (`ScaledEncoder`): it takes raw rows, float32 [batch, features]
(images flattened), and returns the codes [batch, code_dim]; the batch size is dynamic. Row checks (NaN, column
names) are not part of the graph: callers pass finite, numeric rows in the training column order.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from aelab.errors import ConfigError
from aelab.serving.model import AutoencoderModel, load

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME, OUTPUT_NAME = "x", "code"


def default_output(model: AutoencoderModel, fmt: str) -> Path:
    return Path(f"{model.info_.get('name', model.variant)}-encoder{FORMATS[fmt]}")


def export_onnx(model: AutoencoderModel, out: Path) -> None:
    """ONNX via `torch.export` (needs the `onnx` and `onnxscript` packages), with a dynamic batch axis."""
    try:
        import onnxscript  # noqa: F401 - the exporter needs it; a clear message beats torch's ImportError
    except ImportError:
        raise ConfigError(
            "--format onnx: needs the onnx and onnxscript packages (pip install onnx onnxscript)"
        ) from None
    example = torch.rand(2, model.n_features_in_)
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs about optional torchvision operators and warns about its own internals: not ours to fix.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            model.encoder_,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    program.save(str(out))


def export_torchscript(model: AutoencoderModel, out: Path) -> None:
    """A traced TorchScript module: `torch.jit.load(file)(x)` in Python or libtorch, without aelab."""
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(model.encoder_, torch.rand(2, model.n_features_in_))
    traced.save(str(out))


def export_model(model_path: Path, fmt: str, out: Path | None = None) -> str:
    """Write the encoder of the bundle in `model_path`; returns the one-line summary."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: allowed: {', '.join(FORMATS)}")
    model = load(model_path)
    out = Path(out) if out else default_output(model, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    (export_onnx if fmt == "onnx" else export_torchscript)(model, out)
    return (
        f"exported the {model.variant} encoder of {model_path} as {fmt} -> {out} "
        f"(input {INPUT_NAME!r}: raw float32 rows [batch, {model.n_features_in_}], scaling included; "
        f"output {OUTPUT_NAME!r}: [batch, {model.code_dim}])"
    )
