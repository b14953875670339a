"""Which commands a warm server may run: the same interpreter, path, environment and package files only."""

import os
import stat
import sys

import pytest

from aelab import warm


def test_on_by_default_off_by_switch_and_in_ddp_ranks():
    assert warm.enabled({}) is (sys.platform == "linux")
    assert not warm.enabled({"AELAB_WARM_START": "0"})
    assert not warm.enabled({"LOCAL_RANK": "1"})  # a DDP rank started by Lightning


def test_the_key_follows_the_package_files_and_the_environment_but_not_the_stage_name(tmp_path):
    (tmp_path / "cli.py").write_text("x = 1\n")
    env = {"OMP_NUM_THREADS": "1", "DVC_STAGE": "train@sparse"}
    key = warm.server_key(tmp_path, env)
    assert warm.server_key(tmp_path, {**env, "DVC_STAGE": "evaluate"}) == key
    assert warm.server_key(tmp_path, {**env, "OMP_NUM_THREADS": "2"}) != key
    (tmp_path / "cli.py").write_text("x = 22\n")  # an edit: another size
    assert warm.server_key(tmp_path, env) != key


def test_the_socket_folder_is_private_and_a_shared_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = warm.socket_folder()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    os.chmod(folder, 0o777)
    with pytest.raises(PermissionError, match="not private"):
        warm.socket_folder()


def test_without_a_server_the_command_runs_cold_and_starts_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("AELAB_WARM_START", "1")
    started = []
    monkeypatch.setattr(warm, "start_server", lambda path, command: started.append((path, command)))
    code = warm.forward(["aelab", "report"], tmp_path, ["server"])
    assert code is None  # run cold
    if sys.platform == "linux":
        assert started and started[0][0].suffix == ".sock" and started[0][1] == ["server"]


def test_a_server_that_cannot_serve_says_why_and_is_not_started_again(tmp_path, monkeypatch):
    path = tmp_path / "key.sock"
    warm.serve(path, ["aelab.no_such_module"], run=lambda argv: 0, idle_s=0)
    assert "ModuleNotFoundError" in path.with_suffix(".off").read_text()
    assert not path.exists()
    monkeypatch.setattr(warm.subprocess, "Popen", lambda *a, **k: pytest.fail("started again"))
    warm.start_server(path, ["server"])
