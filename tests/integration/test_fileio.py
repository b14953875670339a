"""Atomic writes, quarantine, the folder lock (across two processes) and the torn-journal repair."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from aelab.errors import BusyError, DataError
from aelab.fileio import FolderLock, atomic_open, atomic_save, atomic_write_bytes, quarantine
from aelab.tuning.journal import repair_journal


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.bin"
    atomic_write_bytes(b"old", target)
    atomic_write_bytes(b"new content", target)
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.bin"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # what a plain open would give


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_write_bytes(b"complete", target)
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_save_round_trips_with_weights_only(tmp_path):
    atomic_save({"w": torch.arange(3.0), "epoch": 4}, tmp_path / "layer1.pt")
    loaded = torch.load(tmp_path / "layer1.pt", weights_only=True)
    assert loaded["epoch"] == 4 and torch.equal(loaded["w"], torch.arange(3.0))


def test_quarantine_moves_aside_with_one_line(tmp_path, capsys):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"garbage")
    moved = quarantine(bad, "truncated")
    assert moved == tmp_path / "last.ckpt.corrupt" and moved.read_bytes() == b"garbage" and not bad.exists()
    err = capsys.readouterr().err
    assert err == f"aelab: warning: {bad}: unreadable (truncated); moved aside to {moved}\n"


def _hold_lock(folder: str, ready, done) -> None:
    with FolderLock(Path(folder), "training this run"):
        ready.set()
        done.wait(30)


def test_folder_lock_names_the_holder_in_another_process(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(BusyError) as err:
            FolderLock(tmp_path, "training this run").acquire()
        assert str(err.value) == (
            f"{tmp_path}: another aelab process (pid {holder.pid}) is training this run; wait for it or stop it"
        )
    finally:
        done.set()
        holder.join(30)
    with FolderLock(tmp_path) as lock:  # free again once the holder is gone
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    assert lock._handle is None


def test_folder_lock_is_freed_by_a_killed_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    assert ready.wait(60)
    holder.kill()  # kill -9: no cleanup runs, the kernel drops the lock with the process
    holder.join(30)
    with FolderLock(tmp_path):
        pass


# ---- Optuna journal ----------------------------------------------------------------------------------------
def _study(path: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


def test_torn_journal_tail_is_cut_and_the_study_keeps_its_trials(tmp_path, capsys):
    path = tmp_path / "s.journal"
    _study(path).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "ab')  # a crash in the middle of a record
    assert repair_journal(path) is True
    assert path.read_bytes() == whole
    assert (tmp_path / "s.journal.bak").read_bytes().startswith(whole)
    assert "cut a torn last record (31 bytes" in capsys.readouterr().err
    study = _study(path)
    assert len(study.trials) == 2
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # and it takes new trials
    assert len(_study(path).trials) == 3
    assert repair_journal(path) is False  # a sound journal is left alone


def test_invalid_complete_last_line_is_cut_too(tmp_path):
    path = tmp_path / "s.journal"
    _study(path).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": \n')
    assert repair_journal(path) is True and path.read_bytes() == whole


def test_damage_before_the_last_line_is_refused_not_repaired(tmp_path):
    path = tmp_path / "s.journal"
    _study(path).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"{broken"
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(DataError, match=r"s\.journal: line 2 of \d+ is not a valid journal record, and not the last"):
        repair_journal(path)
    assert path.read_bytes() == before
