"""Files that survive a crash and a second process: atomic writes, quarantine of unreadable files, folder locks.

- `atomic_write_bytes` / `atomic_save`: the new content goes to a temporary file in the same folder, is flushed to
  disk, then renamed over the target: a reader (or a restart after kill -9) sees the old file or the new one,
  never half of one.
- `quarantine`: an unreadable file is moved aside as `<name>.corrupt` with a one-line warning, so the next run
  starts fresh instead of failing on it again and again.
- `FolderLock`: one process at a time in a folder (a run's checkpoints); the second one is told who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aelab.errors import BusyError

LOCK_FILE = ".lock"
CORRUPT_SUFFIX = ".corrupt"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: new files get the mode a plain `open` would give them, not mkstemp's 0600


def warn(message: str) -> None:
    """One line on stderr, in the CLI's style (`aelab: warning: ...`)."""
    print(f"aelab: warning: {message}", file=sys.stderr, flush=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: the directory entry lives in the folder); best effort elsewhere."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle whose content replaces `path` only when the block ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write `data` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save(obj, path)`, atomically (see `atomic_open`)."""
    import torch

    with atomic_open(path) as handle:
        torch.save(obj, handle)


def quarantine(path: Path, reason: str = "") -> Path:
    """Move an unreadable `path` aside as `<name>.corrupt` (replacing an older one) and say so in one line."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, target)
    warn(f"{path}: unreadable{f' ({reason})' if reason else ''}; moved aside to {target}")
    return target


class FolderLock:
    """An exclusive, non-blocking `flock` on `<folder>/.lock`, which records the holder's pid.

    The lock belongs to the open file, so it ends with the process, also after kill -9: no stale lock to clean up.
    `doing` completes the message the second process gets ("... is <doing>; wait for it or stop it").
    """

    def __init__(self, folder: Path, doing: str = "using this folder") -> None:
        self.folder = Path(folder)
        self.doing = doing
        self._handle: IO[str] | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")  # "a+": never truncate the holder's pid before the lock is ours
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise BusyError(
                f"{self.folder}: another aelab process (pid {holder}) is {self.doing}; wait for it or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.truncate(0)
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in 1 MiB blocks (published MD5s, model files' SHA-256)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
