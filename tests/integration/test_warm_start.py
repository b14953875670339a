"""The warm server behind the `aelab` command: same results, exit codes, errors and Ctrl-C as a cold process."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="warm start is Linux only")


@pytest.fixture
def warm(project, tmp_path_factory):
    """Run `aelab` in the scratch project with warm start on; the server is stopped afterwards."""
    runtime = tmp_path_factory.mktemp("runtime")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "AELAB_WARM_START": "1", "AELAB_WARM_IDLE": "60"}
    folder = runtime / f"aelab-warm-{os.getuid()}"

    def aelab(*args: str, **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
        command = [sys.executable, "-m", "aelab.cli", *args]
        if kwargs.pop("background", False):
            return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    aelab.folder = folder
    yield aelab
    for log in folder.glob("*.log"):
        for line in log.read_text().splitlines():
            if "serving" in line:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split("(pid ")[1].split(",")[0]), signal.SIGTERM)


def _wait_for(condition, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _served(folder: Path) -> str:
    return "".join(log.read_text() for log in folder.glob("*.log"))


def test_a_warm_command_runs_like_a_cold_one(warm, project):
    cold = warm("prepare")  # no server yet: runs cold and starts one
    assert cold.returncode == 0, cold.stderr
    meta = (project / "data" / "prepared" / "meta.json").read_text()
    _wait_for(lambda: list(warm.folder.glob("*.sock")))

    again = warm("prepare")
    assert again.returncode == 0, again.stderr
    assert "aelab prepare" in _served(warm.folder)  # the server ran it
    assert "prepared digits" in again.stderr and (project / "data" / "prepared" / "meta.json").read_text() == meta

    usage = warm("train", "--variant", "huge")
    assert usage.returncode == 2 and "invalid choice: 'huge'" in usage.stderr
    bad = warm("prepare", "--set", "data.val_fraction=0.9")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "data.val_fraction: Input should be less than 0.5 (got 0.9)" in bad.stderr
    assert _served(warm.folder).count(": aelab ") == 3  # all three after the first ran warm


def test_ctrl_z_and_ctrl_c_reach_the_command_run_by_the_server(warm, project):
    assert warm("prepare").returncode == 0
    _wait_for(lambda: list(warm.folder.glob("*.sock")))
    training = warm("train", "--variant", "undercomplete", "--set", "train.max_epochs=100000", background=True)
    _wait_for(lambda: list((project / "data" / "checkpoints" / "undercomplete").rglob("last.ckpt")))
    child = int(_served(warm.folder).split("aelab train")[0].rsplit("pid ", 1)[1].split(":")[0])
    training.send_signal(signal.SIGTSTP)  # Ctrl-Z: the work stops too, then resumes with the command
    _wait_for(lambda: _state(child) == "T", seconds=10)
    training.send_signal(signal.SIGCONT)
    _wait_for(lambda: _state(child) != "T", seconds=10)
    training.send_signal(signal.SIGINT)
    _, stderr = training.communicate(timeout=120)
    assert "aelab train" in _served(warm.folder)
    assert training.returncode == 130, stderr
    assert "interrupted; completed work is kept" in stderr


def _state(pid: int) -> str:
    """The process state letter of /proc/<pid>/stat (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
