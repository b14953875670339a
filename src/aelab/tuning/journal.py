"""An Optuna journal whose last line was torn by a crash mid-write is cut back to its last whole record.

Optuna appends one JSON record per line. A process killed during the write leaves a partial last line; the next
append is glued onto it and from then on every read fails with a JSON error. Cutting the partial line loses only
the record that was never completely written (Optuna retries nothing from it), so the study opens with every
trial it had. Damage anywhere else is not a torn write: it is refused, never "repaired".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from aelab.errors import DataError
from aelab.fileio import warn


def _valid(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def _torn_tail(data: bytes, path: Path) -> int | None:
    """The offset where the torn last line starts, None for a sound journal; damage elsewhere is a DataError."""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: b"" when the file ends with a newline
    bad = [i for i, line in enumerate(complete) if not _valid(line)]
    last = len(complete) - 1
    if bad and (tail or bad != [last]):
        raise DataError(
            f"{path}: line {bad[0] + 1} of {len(complete) + bool(tail)} is not a valid journal record, and not the "
            "last one (not a torn write); restore a copy of the journal, or move it aside to start the study afresh"
        )
    if tail:
        return len(data) - len(tail)
    if bad:
        return len(data) - len(complete[last]) - 1
    return None


def repair_journal(path: Path) -> bool:
    """Cut a torn last line (keeping the original as `<path>.bak`); True if the journal was changed.

    Runs under Optuna's own journal lock, so a live writer's half-written line is never mistaken for a torn one.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        cut = _torn_tail(data, path)
        if cut is None:
            return False
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
        with path.open("r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        lock.release()
    warn(f"{path}: cut a torn last record ({len(data) - cut} bytes, a crash mid-write); original kept as {backup}")
    return True
