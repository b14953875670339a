"""Checkpoints that never block a run: written atomically, checked before a resume, moved aside when unreadable.

A truncated or garbage `last.ckpt` (a full disk, a copy cut short, a crash of the machine before the data reached
the disk) used to fail every re-run with a traceback until someone deleted it. Now it is quarantined as
`last.ckpt.corrupt` with a one-line warning and the run resumes from `best.ckpt`, or starts afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aelab.fileio import atomic_save, quarantine

RESUME_FILES = ("last.ckpt", "best.ckpt")
"""Where an interrupted fit can continue from, in order of preference (both hold the full training state)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file, fsync and rename (`aelab.fileio.atomic_save`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        atomic_save(checkpoint, Path(path))


def read_checkpoint(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The content of `path` (loaded with `weights_only=True`), or None if it is unreadable or lacks `keys`.

    An unreadable file is quarantined by global rank zero (`<name>.corrupt`, one-line warning); every rank takes
    the same decision from the same file, so all of them start afresh together.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(content, dict) or any(k not in content for k in keys):
            raise ValueError(f"not a checkpoint: missing {', '.join(k for k in keys if k not in content)}")
    except FileNotFoundError:
        return None  # another rank moved it aside a moment ago: unreadable for everyone
    except Exception as err:  # noqa: BLE001 - torch and pickle raise anything on a damaged file; all mean the same
        if rank_zero_only.rank == 0:
            quarantine(path, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        return None
    return content


def resume_point(ckpt_dir: Path) -> Path | None:
    """The checkpoint an interrupted fit in `ckpt_dir` continues from: `last.ckpt`, else `best.ckpt`, else None."""
    for name in RESUME_FILES:
        path = ckpt_dir / name
        if path.exists() and read_checkpoint(path, ("state_dict", "epoch")) is not None:
            return path
    return None
