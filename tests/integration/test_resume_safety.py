"""A corrupt or contested resume file never blocks training: atomic checkpoints, quarantine, one run per folder."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

from aelab.errors import BusyError
from aelab.paths import CHECKPOINTS_DIR
from aelab.training.checkpoints import AtomicCheckpointIO, read_checkpoint, resume_point
from tests.helpers import make_params
from tests.integration.test_deep_variants import digits  # noqa: F401 - `digits` is a fixture
from tests.integration.test_fileio import _hold_lock


def _torn_checkpoint(path: Path, content: dict) -> None:
    torch.save(content, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_falls_back_from_a_torn_last_to_best_then_to_a_fresh_start(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "best.ckpt")
    _torn_checkpoint(tmp_path / "last.ckpt", {"state_dict": {"w": torch.ones(2)}, "epoch": 4})
    assert resume_point(tmp_path) == tmp_path / "best.ckpt"
    assert (tmp_path / "last.ckpt.corrupt").exists() and not (tmp_path / "last.ckpt").exists()
    err = capsys.readouterr().err
    assert err.startswith(f"aelab: warning: {tmp_path / 'last.ckpt'}: unreadable (") and err.count("\n") == 1
    (tmp_path / "best.ckpt").write_bytes(b"not a checkpoint")
    assert resume_point(tmp_path) is None  # nothing usable: start afresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt.corrupt", "last.ckpt.corrupt"]


def test_a_weights_file_without_training_state_is_no_resume_point(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "last.ckpt")
    assert resume_point(tmp_path) is None and (tmp_path / "last.ckpt.corrupt").exists()


def test_checkpoint_writer_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2}, tmp_path / "last.ckpt")
    assert read_checkpoint(tmp_path / "last.ckpt") == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_garbage_last_ckpt_is_moved_aside_and_training_starts_afresh(prepared_digits, tiny_params, capsys):
    from aelab.training.run import checkpoint_dir, train_variant

    folder = checkpoint_dir(tiny_params, "undercomplete", prepared_digits, CHECKPOINTS_DIR / "undercomplete")
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"garbage from a copy cut short")
    result = train_variant(tiny_params, "undercomplete", prepared_digits)
    assert result.metrics["epochs"] == tiny_params.train.max_epochs
    assert (folder / "last.ckpt.corrupt").read_bytes() == b"garbage from a copy cut short"
    assert f"aelab: warning: {folder / 'last.ckpt'}: unreadable" in capsys.readouterr().err
    assert read_checkpoint(folder / "last.ckpt", ("state_dict", "epoch")) is not None  # written anew
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_truncated_pretrain_layer_is_moved_aside_and_trained_again(tmp_path, digits):  # noqa: F811
    from aelab.data.datamodule import AutoencoderDataModule
    from aelab.models import build_module
    from aelab.training.pretrain import pretrain_layers

    params = make_params(stacked={"hidden_dims": [32, 16, 8], "pretrain_epochs": 1})
    dm = AutoencoderDataModule(digits, batch_size=64, seed=params.seed)

    def run() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        module = build_module(params, "stacked", 64)
        pretrain_layers(params, "stacked", module, dm, logger=False, ckpt_dir=tmp_path)
        return module.state_dict()

    unbroken = run()
    layer2 = tmp_path / "pretrain" / "layer2.pt"
    layer2.write_bytes(layer2.read_bytes()[:100])
    again = run()
    assert (tmp_path / "pretrain" / "layer2.pt.corrupt").exists()
    assert read_checkpoint(layer2) is not None  # phase 2 finished again (from its own checkpoint)
    assert all(torch.equal(unbroken[k], again[k]) for k in unbroken)


def test_a_second_training_of_the_same_run_stops_naming_the_first(prepared_digits, tiny_params):
    from aelab.training.run import checkpoint_dir, train_variant

    folder = checkpoint_dir(tiny_params, "undercomplete", prepared_digits, CHECKPOINTS_DIR / "undercomplete")
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_hold_lock, args=(str(folder.resolve()), ready, done))
    first.start()
    try:
        assert ready.wait(60)
        with pytest.raises(BusyError) as err:
            train_variant(tiny_params, "undercomplete", prepared_digits)
        assert str(err.value) == (
            f"{folder}: another aelab process (pid {first.pid}) is training this run; wait for it or stop it"
        )
        assert not (folder / "run.json").exists()  # nothing shared was touched
    finally:
        done.set()
        first.join(30)


def test_unreadable_run_state_is_moved_aside_and_training_goes_on(tmp_path):
    """A torn `run.json` in a checkpoint folder (a crash while writing it) is moved aside, not a traceback."""
    from aelab.training.run import _read_json

    state = tmp_path / "run.json"
    state.write_text('{"run_id": "ab')
    assert _read_json(state) == {}
    assert not state.exists() and (tmp_path / "run.json.corrupt").exists()
    assert _read_json(state) == {}  # absent: a fresh run
