"""Rows in and results out, in chunks: inputs of every format `data.source` reads, outputs by file extension.

Inputs: CSV (with or without the label column; read in chunks, so a file larger than memory works), Parquet (row
batches), `.npy` (memory-mapped), `.npz` (arrays `x` and optional `y`, as for `data.source: arrays`) and IDX
(`.gz` or plain, as MNIST is published). Outputs: `.csv`, `.parquet` or `.npy`, appended chunk by chunk to a
temporary file that replaces the target only when everything was written.

Rows that hold NaN, infinity or a non-numeric value are reported with their row number, counted from 1 over the
input's data rows (for CSV also the line number, the header being line 1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aelab.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from aelab.serving.bundle import Preprocessing

INPUT_SUFFIXES = (".csv", ".parquet", ".npy", ".npz", ".gz")
OUTPUT_SUFFIXES = (".csv", ".parquet", ".npy")
CHUNK_ROWS = 8192


# ---- matching inputs to the training columns -----------------------------------------------------------------------
def match_columns(columns: list[str], pre: Preprocessing, source: str, label: str | None = None) -> list[str]:
    """The feature columns of a table in training order; missing or extra columns are a `DataError` naming them."""
    columns = [str(c) for c in columns]
    rest = [c for c in columns if c != label]
    if pre.feature_names is None:
        if len(rest) != pre.n_features:
            raise DataError(
                f"{source}: {len(rest)} feature columns, the model takes {pre.n_features} (matched by position: "
                "the model was trained without column names)"
            )
        return rest
    missing = [c for c in pre.feature_names if c not in rest]
    extra = [c for c in rest if c not in pre.feature_names]
    if missing or extra:
        parts = [f"missing column(s) {', '.join(map(repr, missing))}" if missing else ""]
        parts.append(f"extra column(s) {', '.join(map(repr, extra))}" if extra else "")
        raise DataError(f"{source}: {'; '.join(p for p in parts if p)} (the model's columns: {pre.feature_names})")
    return list(pre.feature_names)


def frame_values(frame: pd.DataFrame) -> np.ndarray:
    """float32 values of a table; a non-numeric entry becomes NaN, so it is reported with the invalid rows."""
    import pandas as pd

    try:
        return frame.to_numpy(dtype=np.float32)
    except (ValueError, TypeError):
        return frame.apply(lambda column: pd.to_numeric(column, errors="coerce")).to_numpy(dtype=np.float32)


def invalid_rows(x: np.ndarray) -> np.ndarray:
    """Indices of the rows holding NaN or infinity (non-numeric table entries were turned into NaN)."""
    finite = np.isfinite(x)
    return np.empty(0, dtype=np.int64) if finite.all() else np.flatnonzero(~finite.all(axis=1))


def describe_invalid(x: np.ndarray, row: int, frame: pd.DataFrame | None = None) -> str:
    """What is wrong with row `row`: the first offending column and its value."""
    col = int(np.flatnonzero(~np.isfinite(x[row]))[0])
    name = repr(str(frame.columns[col])) if frame is not None else str(col)
    value = frame.iat[row, col] if frame is not None else x[row, col]
    if isinstance(value, str):
        return f"non-numeric value {value!r} in column {name}"
    number = float(x[row, col])
    return f"{'NaN (missing value)' if np.isnan(number) else f'value {number}'} in column {name}"


def feature_matrix(X: Any, pre: Preprocessing, source: str = "X") -> np.ndarray:
    """Rows of the Python API as float32 [n, features]: arrays by shape, DataFrames by column name."""
    if hasattr(X, "columns") and hasattr(X, "iloc"):  # a pandas DataFrame, without importing pandas for arrays
        frame = X[match_columns(list(X.columns), pre, source)]
        x = frame_values(frame)
        bad = invalid_rows(x)
        if bad.size:
            row = int(bad[0])
            raise DataError(f"{source}: row {row} (index {frame.index[row]!r}): {describe_invalid(x, row, frame)}")
        return x
    x = np.asarray(X)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: values must be numbers, got an array of dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(
            f"{source}: expected rows [n, {pre.n_features}], got shape {x.shape}; one row: X.reshape(1, -1)"
        )
    x = x.reshape(len(x), -1)
    if x.shape[1] != pre.n_features:
        raise DataError(f"{source}: rows have {x.shape[1]} features, the model takes {pre.n_features}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = invalid_rows(x)
    if bad.size:
        raise DataError(f"{source}[{int(bad[0])}]: {describe_invalid(x, int(bad[0]))}")
    return x


# ---- reading inputs ------------------------------------------------------------------------------------------------
@dataclass
class Chunk:
    x: np.ndarray
    """float32 [n, features], raw; may hold invalid rows."""
    start: int
    """0-based position of the first row in the input."""
    labels: Any = None
    """The label column's values (passed through), or None."""
    frame: Any = None
    """The feature columns as read (tables only), for messages about invalid values."""
    progress: int = 0
    """How far the input has been read, in `InputFile.progress_unit`."""


@dataclass
class InputFile:
    path: Path
    chunks: Iterator[Chunk]
    label: str | None = None
    """The name of the passed-through label column, if the input has one."""
    progress_total: int | None = None
    progress_unit: str = "rows"
    is_csv: bool = False

    def where(self, start: int, row: int) -> str:
        """Row `row` of the chunk starting at `start`, counted from 1 (CSV: with its line)."""
        number = start + row + 1
        return f"{self.path}: row {number} (line {number + 1})" if self.is_csv else f"{self.path}: row {number}"


def _array_chunks(x: np.ndarray, labels: np.ndarray | None, pre: Preprocessing, path: Path, rows: int) -> InputFile:
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise DataError(f"{path}: expected a numeric array [rows, features...], got {x.dtype} of shape {x.shape}")
    features = int(np.prod(x.shape[1:]))
    if features != pre.n_features:
        raise DataError(f"{path}: rows have {features} features (shape {x.shape}), the model takes {pre.n_features}")
    if labels is not None and len(labels) != len(x):
        raise DataError(f"{path}: {len(labels)} labels for {len(x)} rows")

    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(x), rows):
            stop = min(start + rows, len(x))
            # A copy: memory-mapped rows are read here, and torch wants writable arrays.
            block = np.array(x[start:stop], dtype=np.float32).reshape(stop - start, features)
            yield Chunk(block, start, None if labels is None else labels[start:stop], progress=stop)

    return InputFile(path, chunks(), label="label" if labels is not None else None, progress_total=len(x))


def _table_chunks(path: Path, pre: Preprocessing, rows: int, label_column: str | None) -> InputFile:
    import pandas as pd

    label = label_column or pre.label_column or "label"
    is_csv = path.suffix.lower() == ".csv"
    if is_csv:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        header = list(parquet.schema_arrow.names)
    has_label = label in header and (pre.feature_names is None or label not in pre.feature_names)
    features = match_columns(header, pre, str(path), label if has_label else None)

    def split(frame: pd.DataFrame, start: int, progress: int) -> Chunk:
        part = frame[features]
        labels = frame[label].to_numpy() if has_label else None
        return Chunk(frame_values(part), start, labels, part, progress)

    def csv_chunks() -> Iterator[Chunk]:
        start = 0
        try:
            with path.open("rb") as handle:
                for frame in pd.read_csv(handle, chunksize=rows, low_memory=False):
                    yield split(frame, start, handle.tell())
                    start += len(frame)
        except (OSError, ValueError) as err:  # a malformed line further down the file
            raise DataError(f"{path}: cannot read past row {start} ({err})") from None

    def parquet_chunks() -> Iterator[Chunk]:
        start = 0
        try:
            for batch in parquet.iter_batches(batch_size=rows, columns=features + ([label] if has_label else [])):
                frame = batch.to_pandas()
                start, first = start + len(frame), start
                yield split(frame, first, start)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read past row {start} ({err})") from None

    if is_csv:
        return InputFile(path, csv_chunks(), label if has_label else None, path.stat().st_size, "bytes", True)
    return InputFile(path, parquet_chunks(), label if has_label else None, parquet.metadata.num_rows)


def open_input(path: Path, pre: Preprocessing, rows: int = CHUNK_ROWS, label_column: str | None = None) -> InputFile:
    """An input file as chunks of raw rows matched to the model's features (label column passed through)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".parquet"):
            return _table_chunks(path, pre, rows, label_column)
        if suffix == ".npy":
            return _array_chunks(np.load(path, mmap_mode="r", allow_pickle=False), None, pre, path, rows)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive:
                    raise DataError(f"{path}: expected an array named 'x' (and optionally 'y'), found {archive.files}")
                x, y = archive["x"], archive.get("y", None)
            return _array_chunks(x, y, pre, path, rows)
        if suffix == ".gz" or path.name.endswith("-ubyte"):
            from aelab.data.sources import read_idx

            return _array_chunks(read_idx(path), None, pre, path, rows)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    raise DataError(f"{path}: unsupported input {suffix!r}; allowed: {', '.join(INPUT_SUFFIXES)} (IDX)")


# ---- writing outputs -----------------------------------------------------------------------------------------------
def check_output(path: Path) -> None:
    """Refuse an output format before any work is done."""
    if Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--out {path}: unsupported output {Path(path).suffix!r}; allowed: .csv, .parquet, .npy")


_NPY_HEADER = 128  # bytes: magic, version, length and a padded header dict, rewritten with the final shape


def _npy_header(shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": shape})
    body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


@dataclass
class OutputWriter:
    """Appends chunks (DataFrames) to `path`; `.npy` keeps the numeric columns (the label column is left out)."""

    path: Path
    label: str | None = None
    rows: int = 0
    _tmp: Path = field(init=False)
    _handle: Any = None
    _parquet: Any = None
    _width: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        check_output(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")

    @property
    def kind(self) -> str:
        return self.path.suffix.lower()[1:]

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv":
            first = self._handle is None
            self._handle = self._handle or self._tmp.open("w", newline="")
            frame.to_csv(self._handle, header=first, index=False, float_format="%.7g")
        elif self.kind == "parquet":
            self._write_parquet(frame)
        else:
            values = frame.drop(columns=[self.label] if self.label in frame else []).to_numpy(dtype="<f4")
            if self._handle is None:
                self._handle = self._tmp.open("wb")
                self._handle.write(_npy_header((0,)))
                self._width = values.shape[1]
            self._handle.write(np.ascontiguousarray(values).tobytes())
        self.rows += len(frame)

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._tmp, table.schema)
        elif table.schema != self._parquet.schema:
            try:
                table = table.cast(self._parquet.schema)
            except (pa.ArrowInvalid, ValueError) as err:
                raise DataError(f"{self.path}: column types changed between chunks ({err})") from None
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._parquet is not None:
            self._parquet.close()
        elif self.kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self._tmp)
        elif self.kind == "npy":
            if self._handle is None:
                self._handle = self._tmp.open("wb")
                self._width = 0
            shape = (self.rows,) if self._width == 1 else (self.rows, self._width)
            self._handle.seek(0)
            self._handle.write(_npy_header(shape))
        if self._handle is not None:
            self._handle.close()
        elif self.kind == "csv":
            self._tmp.write_text("")
        self._tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._handle is not None:
            self._handle.close()
        self._tmp.unlink(missing_ok=True)
