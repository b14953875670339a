"""The `aelab` command's fast exit still runs exit handlers, waits for started threads and flushes output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from aelab.cli import exit_now

marker = Path(sys.argv[1])
atexit.register(lambda: print("exit handler ran", flush=False))
def late_write():
    time.sleep(0.3)
    marker.write_text("written")
threading.Thread(target=late_write).start()
print("buffered output", end="")
exit_now(3)
"""


def test_exit_now_keeps_what_a_normal_exit_does(tmp_path: Path) -> None:
    marker = tmp_path / "thread.txt"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(marker)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "buffered output" in done.stdout and "exit handler ran" in done.stdout
    assert marker.read_text() == "written"  # the thread was waited for


POOL_SCRIPT = """
from concurrent.futures import ThreadPoolExecutor
from aelab.cli import exit_now

pool = ThreadPoolExecutor(max_workers=2)  # kept referenced, as MLflow keeps its artifact upload pool
pool.submit(print, "pool task ran").result()
exit_now(0)
"""


def test_exit_now_does_not_wait_forever_on_an_idle_thread_pool() -> None:
    """Idle pool workers are not daemons and only leave when told that the interpreter shuts down."""
    done = subprocess.run([sys.executable, "-c", POOL_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "pool task ran" in done.stdout


def test_the_console_script_is_the_fast_exit_one() -> None:
    import tomllib

    from tests.conftest import REPO

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["aelab"] == "aelab.cli:console_main"
