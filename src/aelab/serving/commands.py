"""`aelab encode | reconstruct | score MODEL INPUT --out FILE`: a model bundle applied to a file, chunk by chunk."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Full, Queue

import numpy as np
import pandas as pd

from aelab.errors import DataError
from aelab.serving.io import (
    CHUNK_ROWS,
    Chunk,
    InputFile,
    OutputWriter,
    check_output,
    describe_invalid,
    invalid_rows,
    open_input,
)
from aelab.serving.model import AutoencoderModel, load

OUTPUT_OF = {"encode": "codes", "reconstruct": "reconstruction", "score": "score"}
LISTED_ROWS = 10
"""How many skipped row numbers are listed on stderr."""


@contextmanager
def progress_bar(source: InputFile, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when it is a terminal; otherwise nothing is drawn."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=source.progress_total)
        yield lambda done: progress.update(task, completed=done)


def output_frame(model: AutoencoderModel, output: str, values: np.ndarray, labels, label: str | None) -> pd.DataFrame:
    """One chunk of results as a table: codes, reconstructed columns or score (+ is_anomaly), then the label."""
    if output == "codes":
        frame = pd.DataFrame(values, columns=list(model.get_feature_names_out()))
    elif output == "reconstruction":
        names = model.preprocessing_.feature_names or [f"x{i}" for i in range(values.shape[1])]
        frame = pd.DataFrame(values, columns=names)
    else:
        frame = pd.DataFrame({"score": values})
        if model.threshold is not None:
            frame["is_anomaly"] = (values > model.threshold).astype(np.int64)
    if labels is not None and label is not None:
        frame[label] = labels
    return frame


def read_ahead(chunks: Iterator[Chunk], depth: int = 2) -> Iterator[tuple[Chunk, np.ndarray]]:
    """The chunks with their invalid rows, read and checked on a second thread while the model runs on this one.

    Reading (a copy out of a memory-mapped `.npy`, CSV parsing) and the model's matrix products both release the
    GIL, so the next chunk's input work overlaps this chunk's compute. An error while reading is raised here, in
    order, after the chunks before it.
    """
    done = object()
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                item = (chunk, invalid_rows(chunk.x))
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put(err)

    thread = threading.Thread(target=produce, name="aelab-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def apply_to_file(
    command: str,
    model_path: Path,
    input_path: Path,
    out: Path,
    skip_invalid: bool = False,
    label_column: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> str:
    """Run `command` over every row of `input_path` into `out`; returns the one-line summary."""
    check_output(Path(out))
    model = load(model_path)
    output = OUTPUT_OF[command]
    source = open_input(Path(input_path), model.preprocessing_, chunk_rows, label_column)
    writer = OutputWriter(Path(out), source.label)
    skipped: list[int] = []
    anomalies = 0
    try:
        with progress_bar(source, f"{command} {source.path.name}") as advance:
            for chunk, bad in read_ahead(source.chunks):
                x, labels = chunk.x, chunk.labels
                if bad.size and not skip_invalid:
                    row = int(bad[0])
                    raise DataError(
                        f"{source.where(chunk.start, row)}: {describe_invalid(x, row, chunk.frame)}; "
                        "fix the row or pass --skip-invalid"
                    )
                if bad.size:
                    skipped.extend((chunk.start + bad + 1).tolist())
                    keep = np.ones(len(x), dtype=bool)
                    keep[bad] = False
                    x, labels = x[keep], None if labels is None else labels[keep]
                frame = output_frame(model, output, model.compute(output, x), labels, source.label)
                anomalies += int(frame["is_anomaly"].sum()) if "is_anomaly" in frame else 0
                writer.write(frame)
                advance(chunk.progress)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if skipped:
        shown = ", ".join(map(str, skipped[:LISTED_ROWS])) + (", ..." if len(skipped) > LISTED_ROWS else "")
        print(
            f"aelab: skipped {len(skipped)} invalid row(s) of {source.path} (NaN, inf or non-numeric): rows {shown}",
            file=sys.stderr,
        )
    return _summary(command, model, source, writer, anomalies)


def _summary(command: str, model: AutoencoderModel, source: InputFile, writer: OutputWriter, anomalies: int) -> str:
    name = model.info_.get("name", model.variant)
    what = {
        "encode": f"{model.code_dim} code columns",
        "reconstruct": f"{model.n_features_in_} reconstructed columns",
        "score": "score"
        + (f", is_anomaly ({anomalies} above threshold {model.threshold:.6g})" if model.threshold is not None else ""),
    }[command]
    label = f" + label column {source.label!r}" if source.label and writer.kind != "npy" else ""
    verb = {"encode": "encoded", "reconstruct": "reconstructed", "score": "scored"}[command]
    return f"{verb} {writer.rows} rows of {source.path} with {name} -> {writer.path} ({what}{label})"
