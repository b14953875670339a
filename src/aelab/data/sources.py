"""Dataset sources: scikit-learn's digits, MNIST and Fashion-MNIST (original IDX files), and the user's arrays.

Each loader returns raw arrays; splitting and scaling are the `prepare` stage's job.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelab.config import DataConfig
from aelab.data.labels import encode_labels
from aelab.data.prepared import UNREADABLE_NPZ
from aelab.errors import DataError
from aelab.fileio import file_digest
from aelab.paths import RAW_DIR


@dataclass(frozen=True)
class RawDataset:
    """Features as float arrays [n, features]; `x_test` is set only where the source has an official split."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    image_shape: tuple[int, int, int] | None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    label_names: list[int | float | str] | None = None
    """Label value of each code (`y` holds codes); None: the codes are the integer labels themselves."""
    feature_names: list[str] | None = None
    """Column names of a CSV source."""


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset as published: file names, their MD5s and the mirrors to fetch them from."""

    files: dict[str, str]
    mirrors: tuple[str, ...]


IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": IdxDataset(
        files={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip'ed) IDX file, checking that the payload matches its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file ({err}); delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: header says {shape} ({expected} bytes), "
            f"found {len(data) - header} bytes; delete it and fetch it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _download(url: str, target: Path, md5: str) -> None:
    """Fetch into a temporary file beside `target`; only a complete file with the published MD5 takes its name."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        if md5sum(Path(tmp)) != md5:
            raise DataError(f"{url}: MD5 mismatch, download discarded")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a failed or interrupted download leaves nothing behind
        raise


def verify_md5(path: Path, expected: str, name: str) -> None:
    """A file already on disk must be the published one: a damaged or different file is refused by name."""
    if md5sum(path) != expected:
        raise DataError(
            f"{path}: MD5 differs from the published {name} file (expected {expected}); delete it and fetch it "
            "again (data.download=true) or put the original file there"
        )


def fetch_idx(name: str, folder: Path, download: bool) -> dict[str, Path]:
    """The dataset's four files in `folder`, MD5-checked; downloaded first if allowed and missing."""
    spec = IDX_DATASETS[name]
    missing = [f for f in spec.files if not (folder / f).exists()]
    if missing and not download:
        raise DataError(
            f"{name}: missing {', '.join(missing)} in {folder}; put the original files there "
            f"(data.path), or set data.download=true to fetch them"
        )
    for file in spec.files:
        if file not in missing:
            verify_md5(folder / file, spec.files[file], name)
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
    for file in missing:
        errors = []
        for mirror in spec.mirrors:
            try:
                _download(mirror + file, folder / file, spec.files[file])
                break
            except (OSError, DataError) as err:
                errors.append(f"{mirror}: {err}")
        else:
            raise DataError(f"{name}: could not download {file}: {'; '.join(errors)}")
    return {f: folder / f for f in spec.files}


def load_idx_dataset(name: str, folder: Path, download: bool) -> RawDataset:
    files = fetch_idx(name, folder, download)
    arrays = {f: read_idx(p) for f, p in files.items()}
    x, y = arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]
    x_test, y_test = arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]
    for images, labels, split in ((x, y, "train"), (x_test, y_test, "t10k")):
        if len(images) != len(labels):
            raise DataError(f"{folder}: {split} has {len(images)} images but {len(labels)} labels")
    h, w = x.shape[1:]
    return RawDataset(
        name=name,
        x=x.reshape(len(x), -1).astype(np.float32),
        y=y.astype(np.int64),
        image_shape=(1, h, w),
        x_test=x_test.reshape(len(x_test), -1).astype(np.float32),
        y_test=y_test.astype(np.int64),
    )


def load_digits_dataset() -> RawDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return RawDataset(
        name="digits",
        x=digits.data.astype(np.float32),
        y=digits.target.astype(np.int64),
        image_shape=(1, 8, 8),
    )


def _check_labels(y: np.ndarray | None, n: int, source: Path) -> tuple[np.ndarray | None, list | None]:
    """Codes and label names: any labels (strings, integers, floats) become codes 0..k-1 in sorted order."""
    if y is None:
        return None, None
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim > 1 and min(np.asarray(y).shape) == 1 else np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: labels must be a 1-D array of {n} entries, got shape {y.shape}")
    return encode_labels(y, str(source))


LABEL_LIKE = ("label", "labels", "target", "class")
"""CSV column names that hold labels far more often than a feature: used as a feature only when said so."""


def _refuse_unnamed_labels(frame, path: Path, labelled: bool) -> None:
    """A label-like column is never fed to the model as a feature without a word."""
    named = [str(c) for c in frame.columns if str(c).strip().lower() in LABEL_LIKE]
    if named and not labelled:
        raise DataError(
            f"{path}: column {named[0]!r} looks like labels but data.label_column is not set; set "
            f"data.label_column={named[0]} to use it as labels, or rename it to keep it as a feature"
        )


def _check_values(x: np.ndarray, path: Path) -> None:
    """Real, finite numbers that float32 can hold, checked before the cast hides what was wrong."""
    if np.iscomplexobj(x):
        raise DataError(f"{path}: features are complex ({x.dtype}); allowed: real numbers (int or float)")
    if not np.issubdtype(x.dtype, np.number) or x.dtype == bool:
        raise DataError(f"{path}: features must be numeric, got {x.dtype}")
    if not x.size or not np.issubdtype(x.dtype, np.floating):
        return  # integers always fit (float32 reaches 3.4e38)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: features contain NaN or infinite values")
    limit = float(np.finfo(np.float32).max)
    if float(np.abs(x).max()) > limit:
        raise DataError(
            f"{path}: features too large for float32 (largest magnitude {float(np.abs(x).max()):.3g}; "
            f"float32 holds up to {limit:.3g}); rescale them"
        )


def load_arrays(cfg: DataConfig) -> RawDataset:
    """The user's own data: `.npz` (keys x and optional y), `.npy` (+ labels_path) or `.csv` (+ label_column)."""
    path = Path(cfg.path or "")
    if not path.is_file():
        raise DataError(f"data.path: file {path} not found (expected .npy, .npz or .csv)")
    y, feature_names = None, None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive:
                    raise DataError(f"{path}: expected an array named 'x' (and optionally 'y'), found {archive.files}")
                x = archive["x"]
                y = archive.get("y", None)
        elif path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
            if cfg.labels_path:
                y = np.load(cfg.labels_path, allow_pickle=False)
        elif path.suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            if cfg.label_column:
                if cfg.label_column not in frame:
                    raise DataError(f"{path}: no column {cfg.label_column!r} (data.label_column)")
                y = frame.pop(cfg.label_column).to_numpy()
            text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
            if text:
                hint = "" if cfg.label_column else "; name the label column in data.label_column"
                raise DataError(f"{path}: non-numeric feature columns {', '.join(text)}{hint}")
            _refuse_unnamed_labels(frame, path, labelled=bool(cfg.label_column))
            feature_names = [str(c) for c in frame.columns]
            x = frame.to_numpy()
        else:
            raise DataError(f"data.path: {path} has suffix {path.suffix!r}; allowed: .npy, .npz, .csv")
    except UNREADABLE_NPZ as err:  # also a truncated .npz (BadZipFile, EOFError)
        raise DataError(f"{path}: cannot read ({err})") from None
    x = np.asarray(x)
    if x.ndim < 2 or len(x) < 10:
        raise DataError(
            f"{path}: expected an array of shape [samples, features...] with at least 10 rows, got {x.shape}"
        )
    _check_values(x, path)
    image_shape = tuple(cfg.image_shape) if cfg.image_shape else None
    if image_shape is None and x.ndim == 3:
        image_shape = (1, *x.shape[1:])
    elif image_shape is None and x.ndim == 4:
        image_shape = tuple(x.shape[1:])
    x = x.reshape(len(x), -1).astype(np.float32)
    if image_shape is not None and int(np.prod(image_shape)) != x.shape[1]:
        raise DataError(f"data.image_shape: {list(image_shape)} does not match {x.shape[1]} features in {path}")
    codes, names = _check_labels(y, len(x), path)
    return RawDataset(
        name=path.stem,
        x=x,
        y=codes,
        image_shape=image_shape,
        label_names=names,
        feature_names=feature_names,
    )


def load_source(cfg: DataConfig) -> RawDataset:
    if cfg.source == "digits":
        return load_digits_dataset()
    if cfg.source in IDX_DATASETS:
        folder = Path(cfg.path) if cfg.path else RAW_DIR / cfg.source
        return load_idx_dataset(cfg.source, folder, cfg.download)
    return load_arrays(cfg)
